"""Reading shards back: WebDataset over local disk or any fsspec URL (``s3://`` included).

WebDataset opens URLs through ``webdataset.gopen_schemes``; :func:`register_fsspec_scheme`
adds a handler that opens ``s3://...`` (or another protocol) with fsspec and the given
storage options, so the training loader streams shards straight from the object store::

    from brainomni.formats.sample import decode_sample
    from brainomni.pack.stream import register_fsspec_scheme, shard_list
    register_fsspec_scheme("s3", {"profile": "lab"})
    ds = webdataset.WebDataset(shard_list("s3://bucket/pack", split="train"),
                               shardshuffle=False).map(decode_sample)
"""

from __future__ import annotations

from typing import Any

from ..io.fs import get_fs, join_url
from ..io.redact import redact

__all__ = ["register_fsspec_scheme", "shard_list"]


def register_fsspec_scheme(protocol: str = "s3", storage_options: dict | None = None) -> None:
    """Make ``webdataset`` open ``<protocol>://`` URLs with fsspec (read-only)."""
    import webdataset

    options = dict(storage_options or {})

    def opener(url: str, mode: str = "rb", bufsize: int = 8192, **kw: Any):
        if mode != "rb":
            raise ValueError(f"{redact(url)}: shards are opened read-only")
        fs, path = get_fs(url, options)
        return fs.open(path, "rb", block_size=max(bufsize, 8 * 1024 * 1024))

    webdataset.gopen_schemes[protocol] = opener


def shard_list(
    dest: str, split: str | None = None, storage_options: dict | None = None
) -> list[str]:
    """URLs of a finished pack's shards (from its ``index.json``), optionally one split."""
    from ..io.fs import read_json
    from .run import INDEX_NAME

    index = read_json(join_url(dest, INDEX_NAME), storage_options)
    if index is None:
        raise FileNotFoundError(f"{redact(dest)} has no {INDEX_NAME}: the pack is not complete")
    return [
        join_url(dest, s["path"]) for s in index["shards"] if split is None or s["split"] == split
    ]
