"""Crawl a BIDS (OpenNeuro) dataset root at any fsspec URL into recording references.

One recursive listing is taken (see :class:`~brainomni.sources.listing.Listing`); recordings,
companions and sidecars are all found in it. Only sidecars are read (JSON/TSV, cached).

A recording is an entry of a ``sub-*/[ses-*/]{eeg,meg}/`` folder: a file with a known data
suffix (``.vhdr`` for BrainVision, ``.set`` for EEGLAB, never their ``.eeg``/``.vmrk``/
``.fdt`` companions), or a folder (CTF ``.ds``, EGI ``.mff``, or a BTi/4D folder named
``..._meg``). ``derivatives/``, ``sourcedata/`` and other top-level folders are not crawled.

Skipped, with a reason: empty-room and noise recordings, secondary split FIF parts (the
first part lists them as companions), names that are not BIDS recording names, data files
whose BIDS suffix is not ``eeg``/``meg``, and formats no reader handles.

Sidecars follow the BIDS inheritance principle: a ``*_eeg.json``/``*_meg.json`` applies
when its entities are a subset of the recording's and it sits in the recording's folder or
a parent up to the root; JSON files are merged from the root down, TSV files (``channels``,
``electrodes``) are taken from the most specific level.

Sidecars are untrusted (:mod:`brainomni.sources.sidecars`): decoded as UTF-8, else Latin-1
(a non-UTF-8 file is noted in the recording's ``extra`` as ``sidecar_encoding.<file>``). A
recording whose own sidecar is unusable (not JSON, binary, unreadable) is still listed, with
the problem in ``extra`` (``crawl_error``): its task ends as a failed ledger row naming the
file. An unusable ``dataset_description.json`` or ``participants.tsv`` is ignored and listed
among the skipped entries with its reason. Neither stops the crawl.

Size: one crawler (walk, identity, recordings, sidecar inheritance), kept whole while the
crawl-speed work of issue #13 edits it; the sidecar index (:class:`_SidecarIndex`, BIDS
inheritance) is the part to move out next.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from brainomni.io.redact import redact
from brainomni.records import RecordingRef
from brainomni.sources.base import (
    BTI_FORMAT,
    COMPANION_SUFFIXES,
    COMPANIONS,
    FILE_FORMATS,
    FOLDER_FORMATS,
    CrawlResult,
    suffix_of,
)
from brainomni.sources.listing import Listing
from brainomni.sources.sidecars import (
    CRAWL_ERROR_CLASS_KEY,
    CRAWL_ERROR_KEY,
    ENCODING_KEY_PREFIX,
    SidecarError,
)

logger = logging.getLogger(__name__)

MODALITIES = ("eeg", "meg")
SIDECAR_SUFFIXES = frozenset({".json", ".tsv", ".txt", ".md"})
_EMPTY_ROOM_RE = re.compile(r"empty[-_]?room|noise", re.I)
_ACCESSION_RE = re.compile(r"^(?P<name>ds\d{6})(?:[-_]v?(?P<version>\d+\.\d+\.\d+[\w.+-]*))?$")
_BTI_DATA_RE = re.compile(r"^[a-z],rf", re.I)
_NEUROMAG_SPLIT_RE = re.compile(r"_meg-\d+$")
ENTITY_FIELDS = ("subject", "session", "task", "run", "acquisition")


def entities_from_fname(fname: str) -> dict[str, str]:
    """BIDS entities of a file name: ``mne_bids.get_entities_from_fname(on_error="ignore")``
    without its per-call overhead (its ``verbose`` wrapper and per-call tables cost ~45 us;
    a crawl of 200,000 recordings parses about a million names). Same regular expression
    and key map, imported from mne-bids so the two cannot drift; tested equal."""
    keys, regex = _entity_tables()
    base = fname.rsplit("/", 1)[-1]
    return {keys.get(k, k): v for k, v in regex.findall(base)}


@functools.cache
def _entity_tables() -> tuple[dict[str, str], Any]:
    from mne_bids.path import ALLOWED_PATH_ENTITIES_SHORT, param_regex

    return ALLOWED_PATH_ENTITIES_SHORT, param_regex


@dataclass(frozen=True, slots=True)
class _Candidate:
    rel: str  # relative path of the recording (file or folder)
    name: str  # last path component
    modality: str
    fmt: str | None  # reader key; None = let the reader detect
    is_folder: bool
    supported: bool


def crawl_bids(
    url: str,
    *,
    name: str | None = None,
    version: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    modalities: Iterable[str] = MODALITIES,
    line_freq: float | None = None,
    checksums: bool = True,
) -> CrawlResult:
    """Every EEG/MEG recording of the BIDS dataset at ``url``.

    ``name``/``version`` pin the dataset identity (they feed the stable recording id); when
    omitted they come from the root's name (``ds002721`` or the snapshot ``ds002721-1.0.3``),
    then ``dataset_description.json`` (``Name``, ``DatasetVersion``). ``line_freq`` (Hz) is
    used only where no sidecar gives ``PowerLineFrequency``. ``checksums=False`` skips
    content hashing of local files (the ``checksum`` field is then ``None``).
    """
    wanted = tuple(m.lower() for m in modalities)
    bad = sorted(set(wanted) - set(MODALITIES))
    if bad:
        raise ValueError(f"modalities must be among {MODALITIES}, got {bad}")
    listing = Listing.take(url, storage_options, checksums=checksums)
    problems: list[tuple[str, str]] = []  # dataset-level sidecars left unused, with reasons
    ds_name, ds_version = _identity(listing, name, version, problems)
    participants = _participants(listing, problems)
    sidecars = _SidecarIndex(listing, entities_from_fname)
    listing.prefetch(sidecars.needed(), what="sidecars")
    result = CrawlResult()
    for rel, why in problems:
        result.skipped.append(
            (
                RecordingRef(
                    uri=listing.url(listing.abs(rel)),
                    dataset=ds_name,
                    dataset_version=ds_version,
                    relpath=rel,
                ),
                why,
            )
        )
    for cand in _candidates(listing, wanted):
        entities = {k: v for k, v in entities_from_fname(cand.name).items() if v is not None}
        fields = {  # RecordingRef's fields, built once (dataclasses.replace costs ~20 us)
            "uri": listing.url(listing.abs(cand.rel)),
            "format": cand.fmt,
            "dataset": ds_name,
            "dataset_version": ds_version,
            "relpath": cand.rel,
            "modality": cand.modality,
            **{f: entities.get(f, "") for f in ENTITY_FIELDS},
        }
        reason = _skip_reason(cand, entities)
        if not reason and cand.fmt == BTI_FORMAT:
            data = [r for r in listing.under(cand.rel) if _BTI_DATA_RE.match(r.rsplit("/", 1)[-1])]
            if data:
                fields["uri"] = listing.url(listing.abs(sorted(data)[0]))
            else:
                reason = "BTi/4D folder without a c,rf* data file"
        if reason:
            result.skipped.append((RecordingRef(**fields), reason))
            continue
        files = _recording_files(listing, cand, entities)
        try:
            meta = sidecars.metadata(cand, entities, default_line_freq=line_freq)
        except (SidecarError, OSError) as exc:
            # this recording's sidecar is unusable: the recording becomes a failed ledger
            # row (see sidecars.crawl_problem) and the crawl goes on
            meta = {"line_freq": line_freq, "extra": _crawl_error(listing, cand, exc)}
            logger.warning("%s", meta["extra"][0][1])
        extra = [*meta.pop("extra"), *participants.get(f"sub-{entities['subject']}", ())]
        try:
            checksum = listing.checksum(files)
        except OSError as exc:  # unreadable data file (retries spent): a failed row, not a crash
            checksum = None
            if CRAWL_ERROR_KEY not in dict(extra):
                extra = [*_crawl_error(listing, cand, exc, what="a file of"), *extra]
        result.recordings.append(
            RecordingRef(
                **fields,
                size=listing.size(files),
                checksum=checksum,
                extra=tuple(extra),
                **meta,
            )
        )
    result.__post_init__()
    logger.info(
        "crawled BIDS %s (%s %s): %d recordings, %d skipped",
        redact(url),
        ds_name,
        ds_version or "-",
        len(result.recordings),
        len(result.skipped),
    )
    return result


# --------------------------------------------------------------------------- identity


def _crawl_error(
    listing: Listing, cand: _Candidate, exc: BaseException, what: str = "a sidecar of"
) -> list[tuple[str, str]]:
    if isinstance(exc, SidecarError):
        reason, error_class = exc.reason, exc.error_class
    else:
        kind = "SidecarUnreadable" if what == "a sidecar of" else "Unreadable"
        reason, error_class = f"{type(exc).__name__}: {exc}", f"{kind}.{type(exc).__name__}"
    where = redact(listing.url(listing.abs(cand.rel)))
    return [
        (CRAWL_ERROR_KEY, f"{where}: {what} this recording is unusable: {redact(reason)}"),
        (CRAWL_ERROR_CLASS_KEY, error_class),
    ]


def _dataset_sidecar(listing: Listing, rel: str, read: Any, problems: list) -> Any:
    """``read(rel)`` for a dataset-level sidecar; ``None`` (and a noted problem) when the
    file is absent or unusable: it never stops the crawl."""
    if not listing.exists(rel):
        return None
    try:
        return read(rel)
    except (SidecarError, OSError) as exc:
        why = exc.reason if isinstance(exc, SidecarError) else f"{type(exc).__name__}: {exc}"
        logger.warning("%s left unused: %s", rel, redact(why))
        problems.append((rel, f"unusable dataset sidecar, ignored ({redact(why)[:300]})"))
        return None


def _identity(
    listing: Listing, name: str | None, version: str | None, problems: list
) -> tuple[str, str]:
    desc = _dataset_sidecar(listing, "dataset_description.json", listing.read_json, problems)
    desc = desc or {}
    base = listing.root.rstrip("/").rsplit("/", 1)[-1]
    m = _ACCESSION_RE.match(base)
    ds_name = name or (m["name"] if m else "") or str(desc.get("Name") or "") or base
    desc_version = str(desc.get("DatasetVersion") or "")
    snap_version = (m["version"] if m else None) or ""
    ds_version = version or snap_version or desc_version
    if version and desc_version and version != desc_version:
        logger.warning(
            "dataset %s: version %s given, dataset_description.json says %s",
            ds_name,
            version,
            desc_version,
        )
    return ds_name, ds_version


def _participants(listing: Listing, problems: list) -> dict[str, tuple[tuple[str, str], ...]]:
    rows = _dataset_sidecar(listing, "participants.tsv", listing.read_tsv, problems)
    if not rows:
        return {}
    enc = listing.encoding("participants.tsv")
    noted = ((f"{ENCODING_KEY_PREFIX}participants.tsv", enc),) if enc != "utf-8" else ()
    out = {}
    for row in rows:
        pid = row.get("participant_id", "")
        out[pid] = noted + tuple(
            (f"participants.{k}", v)
            for k, v in row.items()
            if k != "participant_id" and v not in ("", "n/a")
        )
    return out


# --------------------------------------------------------------------------- recordings


def _datatype_index(parts: list[str]) -> int | None:
    """Index of the datatype folder in ``sub-X/[ses-Y/]datatype/...``, else ``None``."""
    if not parts or not parts[0].startswith("sub-"):
        return None
    idx = 2 if len(parts) > 2 and parts[1].startswith("ses-") else 1
    return idx if len(parts) > idx + 1 else None


def _candidates(listing: Listing, wanted: tuple[str, ...]) -> list[_Candidate]:
    seen: dict[str, _Candidate] = {}
    for rel in listing.rel_files():
        parts = rel.split("/")
        idx = _datatype_index(parts)
        if idx is None or parts[idx] not in wanted:
            continue
        name, modality = parts[idx + 1], parts[idx]
        rec_rel = "/".join(parts[: idx + 2])
        if rec_rel in seen:
            continue
        is_folder = len(parts) > idx + 2
        suffix = suffix_of(name)
        if is_folder:
            fmt = FOLDER_FORMATS.get(suffix) or (BTI_FORMAT if not suffix else None)
            supported = fmt is not None
        elif suffix in SIDECAR_SUFFIXES or suffix in COMPANION_SUFFIXES:
            continue
        else:
            fmt, supported = FILE_FORMATS.get(suffix), suffix in FILE_FORMATS
        seen[rec_rel] = _Candidate(rec_rel, name, modality, fmt, is_folder, supported)
    return list(seen.values())


def _skip_reason(cand: _Candidate, entities: Mapping[str, str]) -> str | None:
    suffix = suffix_of(cand.name)
    stem = cand.name[: -len(suffix)] if suffix else cand.name
    if not cand.supported:
        what = "folder" if cand.is_folder else "file"
        return f"unsupported {what} format {suffix_of(cand.name) or '(no suffix)'}"
    if "subject" not in entities:
        return "not a BIDS recording name (no sub- entity)"
    if entities["subject"].lower() == "emptyroom":
        return "empty-room recording (sub-emptyroom)"
    if entities.get("task", "").lower() == "noise":
        return "noise recording (task-noise)"
    if _EMPTY_ROOM_RE.search(cand.name):
        return "empty-room/noise recording (name)"
    split = entities.get("split")
    if split is not None and split.isdigit() and int(split) > 1:
        return f"secondary split part (split-{split}; read from split-01)"
    if cand.fmt == "fif" and _NEUROMAG_SPLIT_RE.search(stem):
        return "secondary split part (neuromag -N naming; read from the first part)"
    if not stem.endswith(f"_{cand.modality}"):
        return f"BIDS suffix is not _{cand.modality}"
    return None


def _recording_files(listing: Listing, cand: _Candidate, entities: Mapping[str, str]) -> list[str]:
    """Relative paths of every file the recording is made of."""
    if cand.is_folder:
        return listing.under(cand.rel)
    files = [cand.rel]
    suffix = suffix_of(cand.name)
    stem = cand.rel[: -len(suffix)]
    files += [stem + c for c in COMPANIONS.get(suffix, ()) if listing.exists(stem + c)]
    if cand.fmt == "fif" and entities.get("split"):
        pattern = re.compile(
            re.escape(cand.rel).replace(re.escape(f"_split-{entities['split']}_"), r"_split-\d+_")
            + "$"
        )
        folder = cand.rel.rsplit("/", 1)[0]
        files += [r for r in listing.under(folder) if r != cand.rel and pattern.match(r)]
    return files


# --------------------------------------------------------------------------- sidecars


# (BIDS suffix, extension) of the sidecars a crawl looks up or reads; others (events,
# scans, ...) are not indexed: a crawl parses the name of every indexed file
_INDEXED = frozenset(
    {*((m, ".json") for m in MODALITIES), ("coordsystem", ".json"), ("description", ".json")}
    | {(s, ".tsv") for s in ("channels", "electrodes", "participants")}
)


class _SidecarIndex:
    """Sidecar files by (folder, BIDS suffix, extension), with their entities."""

    def __init__(self, listing: Listing, parse: Any) -> None:
        self.listing = listing
        self.by_key: dict[tuple[str, str, str], list[tuple[str, dict[str, str]]]] = {}
        # per sidecar, its entities as a set of items, whole and without ``space``: a
        # sidecar applies when they are a subset of the recording's (a C set operation;
        # matching was a Python loop per sidecar per recording)
        self._items: dict[str, tuple[frozenset, frozenset]] = {}
        for rel in listing.rel_files():
            ext = suffix_of(rel)
            if ext not in (".json", ".tsv"):
                continue
            folder, _, fname = rel.rpartition("/")
            stem = fname[: -len(ext)]
            bids_suffix = stem.rsplit("_", 1)[-1]
            if (bids_suffix, ext) not in _INDEXED:
                continue
            ents = {k: v for k, v in parse(fname).items() if v is not None}
            self.by_key.setdefault((folder, bids_suffix, ext), []).append((rel, ents))
            items = frozenset(ents.items())
            self._items[rel] = (items, frozenset(i for i in items if i[0] != "space"))

    def needed(self) -> list[str]:
        """Sidecars a crawl reads: JSON and ``channels.tsv`` files, ``participants.tsv``."""
        out = [
            rel
            for (_, suffix, ext), found in self.by_key.items()
            if ext == ".json" or suffix in ("channels", "participants")
            for rel, _ in found
        ]
        return sorted(out)

    def applicable(
        self,
        rec_rel: str,
        entities: Mapping[str, str],
        suffix: str,
        ext: str,
        ignore: tuple[str, ...] = (),
    ) -> list[tuple[str, dict[str, str]]]:
        """Matching sidecars ordered from least to most specific."""
        if ignore not in ((), ("space",)):  # the two the crawl asks for have sets ready
            raise ValueError(f"ignore must be () or ('space',), got {ignore}")
        have = entities.items()
        which = 1 if ignore else 0
        found = []
        for depth, folder in enumerate(_folders(rec_rel.rpartition("/")[0])):
            for rel, ents in self.by_key.get((folder, suffix, ext), ()):
                if self._items[rel][which] <= have:
                    found.append((depth, len(ents), rel, ents))
        if len(found) > 1:
            found.sort(key=lambda f: f[:3])
        return [(rel, ents) for _, _, rel, ents in found]

    def metadata(
        self, cand: _Candidate, entities: Mapping[str, str], *, default_line_freq: float | None
    ) -> dict[str, Any]:
        listing = self.listing
        sidecar: dict[str, Any] = {}
        read: list[str] = []
        for rel, _ in self.applicable(cand.rel, entities, cand.modality, ".json"):
            sidecar.update(listing.read_json(rel))
            read.append(rel)
        line_freq = _as_float(sidecar.get("PowerLineFrequency"))
        extra: list[tuple[str, str]] = [
            (key.lower(), str(sidecar[src]))
            for key, src in (
                ("manufacturer", "Manufacturer"),
                ("manufacturers_model_name", "ManufacturersModelName"),
            )
            if sidecar.get(src) not in (None, "", "n/a")
        ]
        channel_types: tuple[tuple[str, str], ...] = ()
        bads: tuple[str, ...] = ()
        channels = self.applicable(cand.rel, entities, "channels", ".tsv")
        if channels:
            channel_types, bads = self._channels(channels[-1][0])
            read.append(channels[-1][0])
        for rel in read:  # say which sidecars were not UTF-8 (decoded as Latin-1)
            if (enc := listing.encoding(rel)) not in (None, "utf-8"):
                extra.append((ENCODING_KEY_PREFIX + rel.rsplit("/", 1)[-1], enc))
        return {
            "line_freq": line_freq if line_freq is not None else default_line_freq,
            "channel_types": channel_types,
            "bad_channels": bads,
            "electrodes_uri": self._electrodes(cand, entities),
            "extra": extra,
        }

    def _channels(self, rel: str) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
        """(name, TYPE) pairs and bad names of a ``channels.tsv``, once per distinct file
        content (:meth:`Listing.read_tsv` shares the rows of identical files)."""
        rows = self.listing.read_tsv(rel)
        cache = self.__dict__.setdefault("_by_rows", {})
        got = cache.get(id(rows))
        if got is None or got[0] is not rows:
            types = tuple((r["name"], r.get("type", "").upper()) for r in rows if r.get("name"))
            bads = tuple(
                r["name"] for r in rows if r.get("name") and r.get("status", "").lower() == "bad"
            )
            # equal pair lists share one tuple (files differing only in status have the
            # same types): less memory, and the recordings table converts each once
            types = self.__dict__.setdefault("_types", {}).setdefault(types, types)
            got = cache[id(rows)] = (rows, types, bads)
        return got[1], got[2]

    def _electrodes(self, cand: _Candidate, entities: Mapping[str, str]) -> str | None:
        listing = self.listing
        for rel, ents in reversed(
            self.applicable(cand.rel, entities, "electrodes", ".tsv", ignore=("space",))
        ):
            folder = rel.rpartition("/")[0]
            coords = [
                r
                for r, e in self.by_key.get((folder, "coordsystem", ".json"), [])
                if e.get("space") == ents.get("space")
                and all(entities.get(k) == v for k, v in e.items() if k != "space")
            ]
            if coords:
                return listing.url(listing.abs(rel))
            logger.warning(
                "%s has no coordsystem.json beside it; electrodes ignored",
                redact(listing.url(listing.abs(rel))),
            )
        return None


@functools.lru_cache(maxsize=4096)
def _folders(folder: str) -> tuple[str, ...]:
    """The root (``""``), then every folder down to ``folder`` (cached: a folder's
    recordings ask for the same chain)."""
    parts = folder.split("/") if folder else []
    return tuple("/".join(parts[:depth]) for depth in range(len(parts) + 1))


def _as_float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if out > 0 else None
