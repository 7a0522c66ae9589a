"""Crawlers: turn a dataset at any fsspec URL into a frozen list of recording references.

``crawl(source)`` dispatches on ``Source.kind`` (``bids`` or ``tuh``); the output is a
:class:`CrawlResult` (recordings plus skipped entries with reasons) that
:func:`recordings_table` turns into the Parquet recordings table the ingest job shards from.
Heavy dependencies (mne-bids, s3fs, pyarrow) are imported at use.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from brainomni.sources.base import CrawlResult
from brainomni.sources.catalog import Source, load_catalog
from brainomni.sources.table import (
    read_recordings,
    read_table,
    recordings_table,
    refs_from_table,
    skipped_table,
    write_recordings,
    write_table,
)

logger = logging.getLogger(__name__)

__all__ = [
    "CrawlResult",
    "Source",
    "crawl",
    "crawl_many",
    "detect_source",
    "load_catalog",
    "read_recordings",
    "read_table",
    "recordings_table",
    "refs_from_table",
    "skipped_table",
    "with_fixes",
    "write_crawl",
    "write_recordings",
    "write_table",
]


def detect_source(url: str, storage_options: Mapping[str, Any] | None = None, **kw: Any) -> Source:
    """A :class:`Source` for a bare URL: ``bids`` when ``dataset_description.json`` is there.

    Other trees are taken as TUH-style and then need ``name`` and ``version`` in ``kw``.
    """
    from brainomni.io.fs import get_fs
    from brainomni.io.retry import retry

    fs, path = get_fs(url, storage_options)
    is_bids = retry(lambda: fs.exists(f"{path}/dataset_description.json"), what="detect source")
    return Source(
        url=url,
        kind="bids" if is_bids else "tuh",
        storage_options=dict(storage_options or {}),
        **kw,
    )


def crawl(source: Source | str, *, checksums: bool = True) -> CrawlResult:
    """Crawl one source (a :class:`Source`, or a BIDS root URL) into a :class:`CrawlResult`."""
    if isinstance(source, str):
        source = detect_source(source)
    logger.info("crawling %s", source.describe())
    if source.kind == "bids":
        from brainomni.sources.bids import MODALITIES, crawl_bids

        result = crawl_bids(
            source.url,
            name=source.name or None,
            version=source.version or None,
            storage_options=source.storage_options,
            modalities=(source.modality,) if source.modality else MODALITIES,
            line_freq=source.line_freq,
            checksums=checksums,
        )
        return with_fixes(result, source.fixes)
    from brainomni.sources.tuh import crawl_tuh

    result = crawl_tuh(
        source.url,
        name=source.name,
        version=source.version,
        storage_options=source.storage_options,
        line_freq=source.line_freq,
        checksums=checksums,
    )
    return with_fixes(result, source.fixes)


def with_fixes(result: CrawlResult, fixes: str) -> CrawlResult:
    """Every recording with its dataset's channel fixes (JSON) attached.

    The checksum gets ``+fixes-<hash>`` appended: the ingest's resume logic (stores,
    ledger, frozen plan) compares checksums, so a changed fix redoes the dataset's
    recordings like a changed file does.
    """
    if not fixes:
        return result
    from brainomni.sensors.fixes import ChannelFixes

    tag = f"+fixes-{ChannelFixes.from_json(fixes).hash}"

    def attach(ref: Any) -> Any:
        return dataclasses.replace(ref, fixes=fixes, checksum=f"{ref.checksum or ''}{tag}")

    return CrawlResult(
        [attach(r) for r in result.recordings], [(attach(r), why) for r, why in result.skipped]
    )


def crawl_many(sources: list[Source], *, checksums: bool = True) -> CrawlResult:
    """Crawl several sources; refuses two sources that yield the same recording id."""
    recordings: list = []
    skipped: list = []
    for source in sources:  # accumulated in place (``a + b`` per source is quadratic)
        found = crawl(source, checksums=checksums)
        recordings.extend(found.recordings)
        skipped.extend(found.skipped)
    total = CrawlResult(recordings, skipped)
    counts = Counter(r.recording_id for r in total.recordings)
    dup = sorted(i for i, n in counts.items() if n > 1)[:5]
    if dup:
        raise ValueError(
            f"duplicate recording ids across sources (same dataset listed twice?): {dup}"
        )
    return total


def write_crawl(
    result: CrawlResult,
    dest: str,
    storage_options: Mapping[str, Any] | None = None,
    *,
    ids: Sequence[str] | None = None,
) -> tuple[str, str]:
    """Write ``DEST/recordings.parquet`` and ``DEST/skipped.parquet``; their URLs.

    ``ids``: the recordings' ids when the caller has them (see :func:`recordings_table`)."""
    from brainomni.io.fs import join_url

    rec_url, skip_url = join_url(dest, "recordings.parquet"), join_url(dest, "skipped.parquet")
    write_table(recordings_table(result.recordings, ids=ids), rec_url, storage_options)
    write_table(skipped_table(result.skipped), skip_url, storage_options)
    return rec_url, skip_url
