"""Moved to :mod:`brainomni.io.retry`; this alias (the same module object) stays one wave."""

import importlib, sys  # noqa: E401, I001

sys.modules[__name__] = importlib.import_module("brainomni.io.retry")
