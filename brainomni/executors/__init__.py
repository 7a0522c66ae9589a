"""Executors moved to the stage core: :mod:`brainomni.pipeline.local` and
:mod:`brainomni.pipeline.ray` (``ray_executor`` re-exports the latter)."""
