"""Moved to :mod:`brainomni.formats.sample`; this re-export stays one wave."""

from ..formats.sample import *  # noqa: F403
