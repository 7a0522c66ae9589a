from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import MEEG_DIR, SKIP_REASON


@pytest.fixture(scope="session")
def tok_manifest() -> Path:
    """Published manifest of a small 10-s pack of the real-recording corpus."""
    if MEEG_DIR is None:
        pytest.skip(SKIP_REASON)
    from tests.loader.data import packed_manifest

    return packed_manifest("tokenizer-10s")
