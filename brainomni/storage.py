"""Moved to :mod:`brainomni.io` (fs, commit, retry, redact); this re-export stays one wave."""

from .io.commit import *  # noqa: F403
from .io.fs import *  # noqa: F403
from .io.redact import *  # noqa: F403
from .io.retry import *  # noqa: F403
