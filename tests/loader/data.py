"""Packed shards and published manifests from the real-recording corpus (tests/pack/corpus.py).

Built once per process and cached: a 10-s pack (tokenizer) and a 30-s pack (BrainOmni) with
small shards so that splits hold several, unevenly sized shards.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

_CACHE: dict[str, Path] = {}
SHARD_BYTES = {"tokenizer-10s": 1_500_000, "omni-30s": 3_000_000}


def packed_manifest(profile: str) -> Path:
    """Path of ``manifest.json`` for ``profile`` (``tokenizer-10s`` or ``omni-30s``)."""
    if profile in _CACHE:
        return _CACHE[profile]
    from brainomni.manifests.publish import publish
    from brainomni.pack import get_profile
    from brainomni.pack.run import pack
    from tests.pack.corpus import build_corpus

    corpus = build_corpus()
    root = Path(tempfile.mkdtemp(prefix=f"brainomni-{profile}-"))
    atexit.register(shutil.rmtree, root, True)
    dest = root / "shards"
    pack(str(corpus), str(dest), get_profile(profile, target_shard_bytes=SHARD_BYTES[profile]))
    path = publish(str(dest), f"test-{profile}", "1.0.0", root / "manifests", card=False)
    _CACHE[profile] = path
    return path
