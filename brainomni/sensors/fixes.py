"""Per-dataset channel fixes, as catalog data, applied before the sensor table is built.

The official code fixes individual datasets in code (``RENAME_DICT``, ``EXCLUDE_DICT``,
``MONTAGE_DICT``, ``CUSTOM_MONTAGE_DICT``; spec §2 steps 1–3). Here they are fields of a
``[[dataset]]`` table of ``manifests/catalog.toml`` (see :mod:`brainomni.manifests.catalog`):

* ``rename``: ``{ "FP1" = "Fp1" }`` — file name -> name to use; applied first, to the
  channels present (absent names are ignored and reported).
* ``exclude``: ``["T1", "T2"]`` — channels (names after ``rename``, any case; shell
  wildcards allowed: ``"EEG*"``) never kept.
* ``reference``: the recording's reference electrode (``"Cz"`` for HBN). When the file
  carries it as a channel (any case) (flat: it is the reference) it is dropped; its name goes to the
  provenance. ``"average"``/empty: nothing to drop.
* ``montage``: a standard MNE montage name (``standard_1020``, ``biosemi64``,
  ``GSN-HydroCel-129``…) or an electrodes file shipped with the catalog
  (``montages/ds004148.tsv``: tab-separated ``name x y z`` in metres, head frame; see
  ``manifests/montages/README.md``). Applied to the EEG channels as MNE's ``set_montage``
  does, so it wins over positions in the file and over BIDS ``electrodes.tsv``; EEG channels
  it does not name keep the usual fallbacks (10-05 names). Kept channels placed by it get
  ``pos_source = "montage:<name>"``.
* ``fix_note``: free text, why a fix is there or what is uncertain about it.

:class:`ChannelFixes` is plain, hashable data: the crawl attaches its JSON to every
:class:`~brainomni.records.RecordingRef` of the dataset (``RecordingRef.fixes``; a custom
montage travels with its positions, so workers need no catalog files), and
:func:`apply_channel_fixes` applies it to an opened recording. The built-in montages come
from MNE (a field library) rather than from copies of their positions.
"""

from __future__ import annotations

import csv
import dataclasses
import fnmatch
import hashlib
import io
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brainomni.errors import RecordingFailed

FIX_KEYS = ("montage", "rename", "exclude", "reference", "fix_note")
_NO_REFERENCE = ("", "average", "avg", "car")
_MAX_MONTAGE_CHANNELS = 1024
_MAX_JSON_CHARS = 200_000
_HEAD_RADIUS_M = (0.05, 0.2)  # mean electrode radius of a plausible montage file, metres


# MNE 1.13 renamed standard_1005/standard_1020 (the official code's names) to colin27_*
# (identical positions) and deprecates the old names; either spelling is accepted.
_RENAMED = {"standard_1005": "colin27_1005", "standard_1020": "colin27_1020"}


def builtin_montages() -> tuple[str, ...]:
    import mne

    return tuple(mne.channels.get_builtin_montages())


def builtin_montage(name: str) -> str | None:
    """The name this MNE knows the built-in montage ``name`` by; ``None`` if unknown."""
    have = builtin_montages()
    for cand in (name, _RENAMED.get(name), {v: k for k, v in _RENAMED.items()}.get(name)):
        if cand and cand in have:
            return cand
    return None


@dataclass(frozen=True)
class ChannelFixes:
    """The channel fixes of one dataset (empty = nothing to do)."""

    rename: tuple[tuple[str, str], ...] = ()
    exclude: tuple[str, ...] = ()
    reference: str = ""
    montage: str = ""  # MNE built-in name, or the label of a custom montage
    positions: tuple[tuple[str, float, float, float], ...] = field(default=(), repr=False)
    note: str = ""

    def __bool__(self) -> bool:
        return bool(self.rename or self.exclude or self.reference or self.montage)

    @property
    def custom(self) -> bool:
        return bool(self.positions)

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): what ``RecordingRef.fixes`` holds."""
        if not self:
            return ""
        doc: dict[str, Any] = {
            "rename": [list(p) for p in self.rename],
            "exclude": list(self.exclude),
            "reference": self.reference,
            "montage": self.montage,
        }
        if self.positions:
            doc["positions"] = [list(p) for p in self.positions]
        return json.dumps(doc, sort_keys=True, separators=(",", ":"))

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:12] if self else ""

    @classmethod
    def from_json(cls, text: str) -> ChannelFixes:
        """Back from :meth:`to_json`; malformed text is a ``ValueError``."""
        if not text:
            return cls()
        if len(text) > _MAX_JSON_CHARS:  # read back from a frozen crawl table: not trusted
            raise ValueError(f"channel fixes of {len(text)} characters (at most {_MAX_JSON_CHARS})")
        try:
            doc = json.loads(text)
            out = cls(
                rename=tuple((str(a), str(b)) for a, b in doc.get("rename", ())),
                exclude=tuple(str(x) for x in doc.get("exclude", ())),
                reference=str(doc.get("reference", "")),
                montage=str(doc.get("montage", "")),
                positions=tuple(
                    (str(n), float(x), float(y), float(z))
                    for n, x, y, z in doc.get("positions", ())
                ),
            )
            if len(out.positions) > _MAX_MONTAGE_CHANNELS or not all(
                math.isfinite(v) for p in out.positions for v in p[1:]
            ):
                raise ValueError("montage positions must be at most 1024 finite (x, y, z)")
            return out
        except (TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"malformed channel fixes {text[:80]!r}: {exc}") from exc

    @classmethod
    def from_entry(
        cls, entry: Mapping[str, Any], where: str, base_dir: str | Path | None = None
    ) -> ChannelFixes:
        """The fix fields of one catalog entry (other keys ignored), validated.

        ``base_dir``: the folder custom montage files are relative to (the catalog's).
        Errors are ``ValueError`` naming ``where`` and the fix.
        """
        rename = entry.get("rename", {})
        if not isinstance(rename, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) and k and v for k, v in rename.items()
        ):
            raise ValueError(f'{where}: rename must be a table of name = "new name" strings')
        targets = list(rename.values())
        if len(set(targets)) != len(targets):
            raise ValueError(f"{where}: rename maps two channels to the same name")
        exclude = entry.get("exclude", [])
        if not isinstance(exclude, list) or not all(isinstance(x, str) and x for x in exclude):
            raise ValueError(f"{where}: exclude must be a list of channel names")
        reference = entry.get("reference", "")
        if not isinstance(reference, str):
            raise ValueError(f'{where}: reference must be a channel name or "average"')
        note = entry.get("fix_note", "")
        if not isinstance(note, str):
            raise ValueError(f"{where}: fix_note must be text")
        montage = entry.get("montage", "")
        if not isinstance(montage, str):
            raise ValueError(f"{where}: montage must be a string")
        positions: tuple[tuple[str, float, float, float], ...] = ()
        if montage and builtin_montage(montage) is None:
            if not montage.endswith(".tsv"):
                raise ValueError(
                    f"{where}: montage {montage!r} is neither an MNE built-in montage "
                    f"(mne.channels.get_builtin_montages(): {', '.join(builtin_montages())}) "
                    "nor a .tsv electrodes file under the catalog's folder (montages/NAME.tsv)"
                )
            positions = read_montage_file(montage, base_dir, where)
        return cls(
            rename=tuple(sorted(rename.items())),
            exclude=tuple(exclude),
            reference=reference,
            montage=montage,
            positions=positions,
            note=note,
        )


def read_montage_file(
    rel: str, base_dir: str | Path | None, where: str = ""
) -> tuple[tuple[str, float, float, float], ...]:
    """A catalog montage file (``name x y z``, metres): sorted (name, x, y, z) rows."""
    path = Path(rel)
    if path.is_absolute() or ".." in path.parts:
        raise ValueError(f"{where}: montage path {rel!r} must be relative, inside the catalog")
    if base_dir is None:
        raise ValueError(
            f"{where}: montage file {rel!r} can only be read from a catalog on local disk"
        )
    full = Path(base_dir) / path
    if not full.is_file():
        raise ValueError(
            f"{where}: montage file {full} not found (paths are relative to the catalog)"
        )
    if full.stat().st_size > 1_000_000:
        raise ValueError(f"{where}: montage file {full} is larger than 1 MB; not a montage")
    rows = list(csv.DictReader(io.StringIO(full.read_text("utf-8-sig")), delimiter="\t"))
    if not rows or not {"name", "x", "y", "z"} <= set(rows[0]):
        raise ValueError(f"{where}: {full} needs tab-separated columns name, x, y, z (metres)")
    if len(rows) > _MAX_MONTAGE_CHANNELS:
        raise ValueError(
            f"{where}: {full} lists {len(rows)} electrodes; at most {_MAX_MONTAGE_CHANNELS}"
        )
    out: dict[str, tuple[str, float, float, float]] = {}
    for i, row in enumerate(rows, start=2):
        try:
            xyz = [float(row[k]) for k in ("x", "y", "z")]
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {full} line {i}: not a number ({exc})") from exc
        name = (row.get("name") or "").strip()
        if not name or not all(math.isfinite(v) for v in xyz):
            raise ValueError(f"{where}: {full} line {i}: needs a name and finite x, y, z")
        if name in out:
            raise ValueError(f"{where}: {full} lists {name!r} twice")
        out[name] = (name, *xyz)
    radius = sum(math.sqrt(x * x + y * y + z * z) for _, x, y, z in out.values()) / len(out)
    if not _HEAD_RADIUS_M[0] <= radius <= _HEAD_RADIUS_M[1]:
        raise ValueError(
            f"{where}: {full}: mean electrode radius {radius:.3g} is not a head in metres "
            f"({_HEAD_RADIUS_M[0]}–{_HEAD_RADIUS_M[1]} m); convert the file to metres"
        )
    return tuple(sorted(out.values()))


@dataclass
class AppliedFixes:
    """What :func:`apply_channel_fixes` did to one recording (JSON-ready via :meth:`summary`)."""

    fixes: ChannelFixes = field(default_factory=ChannelFixes)
    ref: Any = None  # the RecordingRef, channels.tsv names renamed like the file's
    renamed: dict[str, str] = field(default_factory=dict)
    exclude: tuple[str, ...] = ()  # names present in the recording, to drop
    reference_dropped: str = ""
    montage_placed: tuple[str, ...] = ()  # EEG channels the montage placed
    missing: dict[str, list[str]] = field(default_factory=dict)  # asked for, not in the file

    def summary(self) -> dict[str, Any]:
        if not self.fixes:
            return {}
        out: dict[str, Any] = {"hash": self.fixes.hash}
        if self.renamed:
            out["renamed"] = dict(self.renamed)
        if self.exclude:
            out["excluded"] = list(self.exclude)
        if self.fixes.reference:
            out["reference"] = self.fixes.reference
            out["reference_dropped"] = bool(self.reference_dropped)
        if self.fixes.montage:
            out["montage"] = self.fixes.montage
            out["montage_placed"] = len(self.montage_placed)
        missing = {k: v for k, v in self.missing.items() if v}
        if missing:  # asked for by the catalog, absent from this recording
            out["missing"] = missing
        return out

    def relabel(self, table: Any) -> Any:
        """Mark the sensor table's channels placed by the montage as ``montage:<name>``."""
        placed = set(self.montage_placed)
        if placed:
            label = f"montage:{self.fixes.montage}"
            table.pos_source = [
                label if n in placed and s == "file" else s
                for n, s in zip(table.names, table.pos_source, strict=True)
            ]
        return table


def _montage(fixes: ChannelFixes) -> Any:
    import mne

    if fixes.custom:
        return mne.channels.make_dig_montage(
            ch_pos={n: (x, y, z) for n, x, y, z in fixes.positions}, coord_frame="head"
        )
    return mne.channels.make_standard_montage(builtin_montage(fixes.montage) or fixes.montage)


def apply_channel_fixes(raw: Any, ref: Any) -> AppliedFixes:
    """Apply ``ref.fixes`` (a :class:`~brainomni.records.RecordingRef`'s catalog channel
    fixes) to ``raw`` (an ``mne.io.Raw``, loaded or not).

    Renames channels and sets the montage in place; returns what was done, with the names
    the sensor table must drop (``exclude`` and a present reference electrode) and ``ref``
    with its BIDS ``channels.tsv`` names (types, bads) renamed the same way. Fixes that
    contradict the file (a rename onto an existing name, a broken montage) are a
    :class:`~brainomni.errors.RecordingFailed` naming the file and the catalog fix.
    """
    uri = ref.uri
    try:
        fixes = ChannelFixes.from_json(ref.fixes)
    except ValueError as exc:
        raise RecordingFailed(
            f"{uri}: {exc}; recrawl with a valid catalog", error_class="BadChannelFixes"
        ) from exc
    done = AppliedFixes(fixes, ref=ref)
    if not fixes:
        return done
    names = list(raw.ch_names)
    present = set(names)
    mapping = {a: b for a, b in fixes.rename if a in present and a != b}
    done.missing["rename"] = sorted(a for a, _ in fixes.rename if a not in present)
    clash = sorted(b for b in mapping.values() if b in present and b not in mapping)
    if clash:
        raise RecordingFailed(
            f"{uri}: the catalog renames channels onto names the file already has ({clash}); "
            "fix the dataset's rename table in the catalog",
            error_class="BadChannelFixes",
        )
    if mapping:
        raw.rename_channels(mapping, verbose="error")
        done.renamed = mapping
        done.ref = dataclasses.replace(
            ref,
            channel_types=tuple((mapping.get(n, n), t) for n, t in ref.channel_types),
            bad_channels=tuple(mapping.get(n, n) for n in ref.bad_channels),
        )
    # exclude/reference match case-insensitively (the official code's "Cpz" is "CPz")
    lower = {n.lower(): n for n in raw.ch_names}
    drop, unmatched = [], []
    for pattern in fixes.exclude:
        hits = [n for low, n in lower.items() if fnmatch.fnmatchcase(low, pattern.lower())]
        drop += [n for n in hits if n not in drop]
        if not hits:
            unmatched.append(pattern)
    done.missing["exclude"] = sorted(unmatched)
    ref = fixes.reference
    if ref.lower() not in _NO_REFERENCE and ref.lower() in lower:
        done.reference_dropped = lower[ref.lower()]
        if done.reference_dropped not in drop:
            drop.append(done.reference_dropped)
    done.exclude = tuple(drop)
    if fixes.montage:
        done.montage_placed = _set_montage(raw, fixes, set(drop), uri)
    return done


def _set_montage(raw: Any, fixes: ChannelFixes, drop: set[str], uri: str) -> tuple[str, ...]:
    """``set_montage`` on the EEG channels the montage names (case-insensitively)."""
    import mne
    import numpy as np

    try:
        montage = _montage(fixes)
    except ValueError as exc:  # a built-in name this MNE does not know
        raise RecordingFailed(
            f"{uri}: montage {fixes.montage!r} of the catalog is unknown to this MNE ({exc}); "
            "fix the dataset's montage in the catalog",
            error_class="BadChannelFixes",
        ) from exc
    known = {n.lower() for n in montage.ch_names}
    eeg = mne.pick_types(raw.info, meg=False, eeg=True, exclude=[])
    placed = [
        raw.ch_names[i]
        for i in eeg
        if raw.ch_names[i].lower() in known and raw.ch_names[i] not in drop
    ]
    if not placed:
        return ()
    # Set the montage on a copy of the placed channels only (other EEG channels keep what the
    # file gives; set_montage would otherwise blank them), then copy their locations back.
    sub = mne.pick_info(raw.info, [raw.ch_names.index(n) for n in placed], verbose="error")
    with sub._unlock():
        sub["bads"] = []
    try:
        sub.set_montage(montage, match_case=False, on_missing="ignore", verbose="error")
    except (ValueError, RuntimeError) as exc:
        raise RecordingFailed(
            f"{uri}: montage {fixes.montage!r} of the catalog could not be applied ({exc}); "
            "fix the dataset's montage in the catalog",
            error_class="BadChannelFixes",
        ) from exc
    index = {n: i for i, n in enumerate(raw.ch_names)}
    with raw.info._unlock():
        for ch in sub["chs"]:
            if not np.all(np.isfinite(ch["loc"][:3])):
                continue
            dst = raw.info["chs"][index[ch["ch_name"]]]
            dst["loc"][:] = ch["loc"]
            dst["coord_frame"] = ch["coord_frame"]
    return tuple(n for n in placed if np.all(np.isfinite(raw.info["chs"][index[n]]["loc"][:3])))
