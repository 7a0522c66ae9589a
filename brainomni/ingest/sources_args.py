"""Source specs of ``brainomni ingest --source 'URL [key=value ...]'`` (``KEY=VALUE`` parsed by
:func:`brainomni.cli_common.parse_kv`)."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import Any

from brainomni.cli_common import parse_kv
from brainomni.sources import Source, detect_source, load_catalog

SOURCE_KEYS = ("kind", "name", "version", "modality", "line_freq")


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
        kw = parse_kv(rest, f"--source {url}", raw=("name", "version"))
        unknown = set(kw) - set(SOURCE_KEYS)
        if unknown:
            raise ValueError(f"--source {url}: unknown keys {sorted(unknown)}; use {SOURCE_KEYS}")
        if "kind" in kw:
            sources.append(Source(url=url, storage_options=options, **kw))
        else:
            sources.append(detect_source(url, options, **kw))
    for cat in catalogs or ():
        sources += load_catalog(cat)
    return sources
