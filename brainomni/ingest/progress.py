"""Progress of a running ingest: moved to the stage core (:mod:`brainomni.pipeline.progress`)."""

from brainomni.pipeline.progress import Progress

__all__ = ["Progress"]
