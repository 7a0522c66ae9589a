"""Moved to :mod:`brainomni.pipeline.ray` (the stage core's Ray executor); re-exported here
for callers of the old path."""

from brainomni.pipeline.ray import FORWARD_ENV, RayExecutor, dead_row, error_row, ray_map

__all__ = ["FORWARD_ENV", "RayExecutor", "dead_row", "error_row", "ray_map"]
