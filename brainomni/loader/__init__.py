"""Streaming shard loader with exact, versioned, layout-independent resume.

``brainomni.loader.plan`` is pure index arithmetic; ``ShardLoader`` (torch) is imported on
first use so that ``import brainomni.loader.plan`` stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["IncompatibleLoaderState", "ReadConfig", "ShardLoader", "read_manifest"]


def __getattr__(name: str) -> Any:
    if name in ("IncompatibleLoaderState", "ShardLoader", "read_manifest"):
        from . import loader

        return getattr(loader, name)
    if name == "ReadConfig":
        from .reader import ReadConfig

        return ReadConfig
    raise AttributeError(name)
