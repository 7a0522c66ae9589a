"""The source catalog: which datasets make up a corpus, where they are, which version.

Three hand-editable formats, chosen by the file's suffix:

TOML (``.toml``)::

    [[source]]
    name = "ds002721"
    url = "s3://openneuro.org/ds002721"
    version = "1.0.3"
    kind = "bids"                      # bids | tuh
    modality = "eeg"                   # optional filter: eeg | meg (default: both)
    storage_options = { anon = true }  # public bucket; never keys or secrets

    [[source]]
    name = "tuh_eeg"
    url = "/data/tuh_eeg/v2.0.1/edf"
    version = "2.0.1"
    kind = "tuh"
    line_freq = 60

YAML (``.yaml``/``.yml``): the same entries as a list under ``sources:`` (and dataset
tables with channel fixes under ``datasets:``).

Plain text (``.txt``/``.lst``): one source per line, ``URL [VERSION] [key=value ...]``;
``#`` starts a comment. Example: ``s3://openneuro.org/ds004148 1.0.1 anon=true``.

Channel fixes (``montage``, ``rename``, ``exclude``, ``reference``) are properties of a
dataset, not of where it is stored: they live in the catalog's ``[[dataset]]`` table of
the same name (accession or alias, see :mod:`brainomni.manifests.catalog`), and
:func:`load_catalog` attaches them to the source (``Source.fixes``); the crawl then
attaches them to every recording. A ``[[source]]`` table that sets them is refused.

Credentials never go in a catalog: they come from the environment or an AWS profile
(``storage_options = { profile = "lab" }``), see :mod:`brainomni.io.fs`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from brainomni.io.fs import check_storage_options, get_fs
from brainomni.io.redact import redact
from brainomni.io.retry import retry

logger = logging.getLogger(__name__)

KINDS = ("bids", "tuh")
_BOOL = {"true": True, "false": False, "yes": True, "no": False}


@dataclass(frozen=True)
class Source:
    """One dataset to crawl. ``name``/``version`` feed the stable recording ids."""

    url: str
    kind: str = "bids"
    name: str = ""
    version: str = ""
    modality: str = ""  # "" = every modality the crawler finds; else "eeg" or "meg"
    storage_options: Mapping[str, Any] = field(default_factory=dict, hash=False)
    line_freq: float | None = None  # Hz; BIDS: fallback when no sidecar says; TUH: all files
    fixes: str = ""  # channel fixes JSON (ChannelFixes.to_json), from the [[dataset]] table

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url.strip():
            raise ValueError("Source.url must be a non-empty path or URL")
        if self.kind not in KINDS:
            raise ValueError(f"Source.kind must be one of {KINDS}, got {self.kind!r}")
        if self.modality not in ("", "eeg", "meg"):
            raise ValueError(
                f"Source.modality must be 'eeg', 'meg' or empty, got {self.modality!r}"
            )
        if self.kind == "tuh" and not (self.name and self.version):
            raise ValueError(f"Source {redact(self.url)}: kind 'tuh' needs name and version")
        if self.kind == "tuh" and self.modality == "meg":
            raise ValueError("Source.modality: TUH trees hold EEG only")
        if self.line_freq is not None and not self.line_freq > 0:
            raise ValueError(f"Source.line_freq must be > 0 Hz, got {self.line_freq}")
        if not isinstance(self.storage_options, Mapping):
            raise ValueError("Source.storage_options must be a mapping")
        check_storage_options(self.storage_options)

    @classmethod
    def from_mapping(cls, entry: Mapping[str, Any], where: str = "") -> Source:
        """Build from one catalog entry; unknown keys are an error naming the entry."""
        from brainomni.sensors.fixes import FIX_KEYS

        known = {f.name for f in fields(cls)} - {"fixes"}
        fix_keys = sorted(set(entry) & {*FIX_KEYS, "fixes"})
        if fix_keys:
            raise ValueError(
                f"{where}: channel fixes {fix_keys} belong in the [[dataset]] table (YAML: "
                "datasets: list) of the same name, not in [[source]]"
            )
        unknown = sorted(set(entry) - known)
        if unknown:
            raise ValueError(f"{where}: unknown catalog key(s) {unknown}; known: {sorted(known)}")
        kw = dict(entry)
        if kw.get("line_freq") is not None:
            kw["line_freq"] = float(kw["line_freq"])
        for key in ("version", "name"):
            if key in kw:
                kw[key] = str(kw[key])
        try:
            return cls(**kw)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from exc

    def describe(self) -> str:
        """Short label for logs (credentials redacted)."""
        label = f"{self.name or '?'}@{self.version or '?'}"
        fixes = f", fixes {_fixes_hash(self.fixes)}" if self.fixes else ""
        return f"{label} ({self.kind}, {redact(self.url)}{fixes})"

    @property
    def dataset_key(self) -> str:
        """The dataset's catalog name: ``name``, else the URL's last part (``ds002721``)."""
        from brainomni.splits import dataset_name

        return dataset_name(self.name or self.url.rstrip("/").rsplit("/", 1)[-1])


def _fixes_hash(text: str) -> str:
    from brainomni.sensors.fixes import ChannelFixes

    return ChannelFixes.from_json(text).hash


def load_catalog(url: str, storage_options: Mapping[str, Any] | None = None) -> list[Source]:
    """Sources listed in a TOML, YAML or plain-text catalog at ``url`` (any fsspec URL)."""
    fs, path = get_fs(url, storage_options)
    raw = retry(lambda: fs.cat_file(path), what=f"read {url}")
    try:  # the job's own configuration: no fallback decoding, a clear error instead
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"catalog {redact(url)!r} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
            "save it as UTF-8"
        ) from None
    lower = path.lower()
    fixes: dict[str, str] = {}
    if lower.endswith(".toml"):
        entries, datasets = _toml_entries(text)
        fixes = _dataset_fixes(datasets, redact(url), fs, path)
    elif lower.endswith((".yaml", ".yml")):
        entries, datasets = _yaml_entries(text)
        fixes = _dataset_fixes(datasets, redact(url), fs, path)
    elif lower.endswith((".txt", ".lst")):
        entries = _text_entries(text)
    else:
        raise ValueError(f"catalog {redact(url)!r}: use a .toml, .yaml/.yml or .txt file")
    sources = [
        Source.from_mapping(e, f"{redact(url)} entry {i + 1}") for i, e in enumerate(entries)
    ]
    if fixes:
        sources = [
            dataclasses.replace(s, fixes=fixes[s.dataset_key]) if s.dataset_key in fixes else s
            for s in sources
        ]
    seen: dict[tuple[str, str], str] = {}
    for s in sources:
        if s.name and (s.name, s.version) in seen:
            raise ValueError(f"catalog {redact(url)!r}: {s.name}@{s.version} is listed twice")
        seen[(s.name, s.version)] = s.url
    logger.info(
        "catalog %s: %d sources (%d with channel fixes)",
        redact(url),
        len(sources),
        sum(1 for s in sources if s.fixes),
    )
    return sources


def _dataset_fixes(entries: list[Any], where: str, fs: Any, path: str) -> dict[str, str]:
    """Canonical dataset name (accession and aliases) -> channel fixes JSON."""
    from brainomni.io.fs import is_local
    from brainomni.manifests.catalog import datasets_from_entries

    if not entries:
        return {}
    if not isinstance(entries, list):
        raise ValueError(f"{where}: [[dataset]] entries must be an array of tables")
    base = os.path.dirname(path) if is_local(fs) else None
    out: dict[str, str] = {}
    for d in datasets_from_entries(entries, where, base):
        if d.fixes:
            for name in (d.accession, *d.aliases):
                out[d.key if name == d.accession else _canon(name)] = d.fixes.to_json()
    return out


def _canon(name: str) -> str:
    from brainomni.splits import dataset_name

    return dataset_name(name)


def _toml_entries(text: str) -> tuple[list[Mapping[str, Any]], Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        from brainomni.errors import require

        tomllib = require("tomli", "ingest")  # type: ignore[assignment]
    data = tomllib.loads(text)
    entries = data.get("source", data.get("sources", []))
    if not isinstance(entries, list):
        raise ValueError("a TOML catalog lists its entries as [[source]] tables")
    return entries, data.get("dataset", [])


def _yaml_entries(text: str) -> tuple[list[Mapping[str, Any]], Any]:
    from brainomni.errors import require

    yaml = require("yaml", "ingest")
    data = yaml.safe_load(text) or {}
    entries = data.get("sources", []) if isinstance(data, Mapping) else data
    if not isinstance(entries, list):
        raise ValueError("a YAML catalog lists its entries under 'sources:'")
    return entries, data.get("datasets", []) if isinstance(data, Mapping) else []


def _text_entries(text: str) -> list[Mapping[str, Any]]:
    entries = []
    for line in text.splitlines():
        tokens = shlex.split(line, comments=True)
        if not tokens:
            continue
        entry: dict[str, Any] = {"url": tokens[0]}
        options: dict[str, Any] = {}
        for tok in tokens[1:]:
            if "=" not in tok:
                entry["version"] = tok
                continue
            key, value = tok.split("=", 1)
            parsed: Any = _BOOL.get(value.lower(), value)
            if key in ("anon", "endpoint_url", "profile", "requester_pays"):
                options[key] = parsed
            else:
                entry[key] = parsed
        if options:
            entry["storage_options"] = options
        entries.append(entry)
    return entries
