from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import MEEG_DIR, SKIP_REASON


@pytest.fixture(scope="session")
def corpus() -> Path:
    """Root of the real-recording store corpus (see tests/pack/corpus.py)."""
    if MEEG_DIR is None:
        pytest.skip(SKIP_REASON)
    from tests.pack.corpus import build_corpus

    return build_corpus()
