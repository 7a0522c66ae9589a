"""Command-line vocabulary of the ingest entry point: ``KEY=VALUE`` pairs and source specs."""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from typing import Any

from brainomni.sources import Source, detect_source, load_catalog

SOURCE_KEYS = ("kind", "name", "version", "modality", "line_freq")


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_pairs(items: Sequence[str] | None, what: str) -> dict[str, Any]:
    """``["k=v", ...]`` -> ``{k: v}`` with values parsed as JSON when they are JSON."""
    out = {}
    for item in items or ():
        if "=" not in item:
            raise ValueError(f"{what}: expected KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k] = _value(v)
    return out


def sources_from_args(
    specs: Sequence[str] | None,
    catalogs: Sequence[str] | None,
    options: dict[str, Any],
    *,
    anon: bool = False,
) -> list[Source]:
    """Sources from ``--source 'URL [key=value ...]'`` specs and ``--catalog`` files.

    ``options`` (and ``anon``) are the storage options of the ``--source`` URLs; catalog
    entries carry their own. A spec without ``kind`` is detected (``detect_source``).
    """
    options = {**options, **({"anon": True} if anon else {})}
    sources = []
    for spec in specs or ():
        url, *rest = shlex.split(spec)
        kw = parse_pairs(rest, f"--source {url}")
        unknown = set(kw) - set(SOURCE_KEYS)
        if unknown:
            raise ValueError(f"--source {url}: unknown keys {sorted(unknown)}; use {SOURCE_KEYS}")
        kw = {k: (str(v) if k in ("name", "version") else v) for k, v in kw.items()}
        if "kind" in kw:
            sources.append(Source(url=url, storage_options=options, **kw))
        else:
            sources.append(detect_source(url, options, **kw))
    for cat in catalogs or ():
        sources += load_catalog(cat)
    return sources
