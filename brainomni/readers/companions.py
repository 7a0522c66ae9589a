"""Companion files: what must travel with a recording's main file (same-stem files, the
files a BrainVision header names, later FIF split parts, BTi's config), with names checked
so that a header cannot point outside the recording's folder (:func:`safe_join`). The
registry (:mod:`brainomni.readers.formats`) names which rule each format uses.

This module imports neither mne nor fsspec at import time.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from fsspec import AbstractFileSystem


@dataclass(frozen=True, slots=True)
class Companion:
    """A file that must (or may) sit beside the main file. ``path`` is an fsspec/local path."""

    path: str
    required: bool
    role: str  # e.g. "data file (DataFile=)", "FIF split part"


CompanionFn = Callable[["AbstractFileSystem", str], list[Companion]]


def _parent(path: str) -> str:
    return posixpath.dirname(path.rstrip("/"))


def safe_join(base_dir: str, rel: str) -> str:
    """Join a companion's relative name onto ``base_dir``, refusing escapes.

    Raises ``ValueError`` for absolute names, drive letters or ``..`` components: a header
    must not make us read or write outside the recording's own folder.
    """
    rel_posix = rel.replace("\\", "/").strip()
    if not rel_posix or rel_posix.startswith("/") or re.match(r"^[A-Za-z]:", rel_posix):
        raise ValueError(f"companion name {rel!r} is absolute or empty")
    parts = [p for p in rel_posix.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts) or not parts:
        raise ValueError(f"companion name {rel!r} escapes the recording's folder")
    return posixpath.join(base_dir, *parts) if base_dir else posixpath.join(*parts)


def _stem(name: str, extensions: tuple[str, ...]) -> str:
    low = name.lower()
    for ext in sorted(extensions, key=len, reverse=True):
        if low.endswith(ext):
            return name[: -len(ext)]
    return posixpath.splitext(name)[0]


def same_stem(*suffixes: str, required: bool = False, role: str = "companion") -> CompanionFn:
    """Companions named ``<stem><suffix>`` beside the main file (each suffix tried as given,
    upper and lower case; the first that exists is used, else the first spelling is listed)."""

    def find(fs: AbstractFileSystem, path: str) -> list[Companion]:
        parent, name = _parent(path), posixpath.basename(path)
        stem = posixpath.splitext(name)[0]
        out = []
        for suffix in suffixes:
            spellings = list(dict.fromkeys((suffix, suffix.upper(), suffix.lower())))
            found = next(
                (c for s in spellings if fs.exists(c := posixpath.join(parent, stem + s))),
                None,
            )
            out.append(Companion(found or posixpath.join(parent, stem + suffix), required, role))
        return out

    return find


_BV_KEYS = {"datafile": "data file (DataFile=)", "markerfile": "marker file (MarkerFile=)"}


def brainvision_companions(fs: AbstractFileSystem, path: str) -> list[Companion]:
    """The data and marker files named in a BrainVision header's ``[Common Infos]``."""
    with fs.open(path, "rb") as f:
        text = f.read(1 << 20).decode("latin-1")
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip().lower() in _BV_KEYS and value.strip():
            found.setdefault(key.strip().lower(), value.strip())
    stem, parent = posixpath.splitext(posixpath.basename(path))[0], _parent(path)
    defaults = {"datafile": stem + ".eeg", "markerfile": stem + ".vmrk"}
    out = []
    for key, role in _BV_KEYS.items():
        rel = found.get(key, defaults[key])
        try:
            out.append(Companion(safe_join(parent, rel), True, role))
        except ValueError as exc:
            raise ValueError(f"BrainVision header {path}: {exc}") from None
    return out


_SPLIT_BIDS = re.compile(r"_split-(\d+)")


def fif_split_companions(fs: AbstractFileSystem, path: str) -> list[Companion]:
    """Later parts of a split FIF recording: ``name-1.fif, name-2.fif...`` or BIDS
    ``..._split-02_...fif``. MNE follows the chain itself; they only need to be present."""
    parent, name = _parent(path), posixpath.basename(path)
    if _SPLIT_BIDS.search(name):
        pattern = re.compile(re.escape(_SPLIT_BIDS.sub("\0", name)).replace("\0", r"_split-\d+"))
    else:
        stem = _stem(name, (".fif.gz", ".fif"))
        ext = name[len(stem) :]
        pattern = re.compile(re.escape(stem) + r"-\d+" + re.escape(ext))
    try:
        siblings = fs.ls(parent or ".", detail=False)
    except (FileNotFoundError, NotADirectoryError):  # pragma: no cover - parent vanished
        return []
    return [
        Companion(s, False, "FIF split part")
        for s in sorted(siblings)
        if posixpath.basename(s) != name and pattern.fullmatch(posixpath.basename(s))
    ]


def bti_companions(fs: AbstractFileSystem, path: str) -> list[Companion]:
    """BTi/4D: ``config`` (required) and ``hs_file`` (head shape, optional) beside the data."""
    parent = _parent(path)
    return [
        Companion(posixpath.join(parent, "config"), True, "BTi config"),
        Companion(posixpath.join(parent, "hs_file"), False, "BTi head shape"),
    ]
