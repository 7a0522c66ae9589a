"""Shared fixtures: locating the real recordings, temporary folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

ROOT = Path(__file__).resolve().parents[1]


def find_meeg_dir() -> Path | None:
    """The real recordings: ``../shared/data/meeg`` beside the checkout, else MNE's testing data."""
    env = os.environ.get("BRAINOMNI_MEEG_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(ROOT.parent / "shared" / "data" / "meeg")
    for c in candidates:
        if (c / "SSS").is_dir():
            return c
    try:
        import mne

        p = mne.datasets.testing.data_path(download=False)
        if p and (Path(p) / "SSS").is_dir():
            return Path(p)
    except Exception:  # noqa: BLE001 - any failure just means "not available"
        pass
    return None


MEEG_DIR = find_meeg_dir()
SKIP_REASON = (
    "real recordings not found: expected ../shared/data/meeg beside the checkout "
    "(or MNE's testing dataset, or BRAINOMNI_MEEG_DIR)"
)


@pytest.fixture(scope="session")
def meeg_dir() -> Path:
    if MEEG_DIR is None:
        pytest.skip(SKIP_REASON)
    return MEEG_DIR


def meeg_file(rel: str) -> Path:
    """Path of one real recording, skipping the test when the data is absent."""
    if MEEG_DIR is None:
        pytest.skip(SKIP_REASON)
    p = MEEG_DIR / rel
    if not p.exists():
        pytest.skip(f"{rel} not present in {MEEG_DIR}")
    return p


pytest_plugins = ["tests.fixtures_s3", "tests.fixtures_corpora"]
