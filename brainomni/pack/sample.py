"""Moved to :mod:`brainomni.formats.sample`; this re-export stays one wave."""

from ..formats.sample import *  # noqa: F403
from ..formats.sample import npy_load as npy_loads  # noqa: F401
