"""Moved: the demo is the top-level ``demo`` package (``python -m demo`` from the repository
root, or ``make demo``). This shim forwards to it from a checkout."""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    root = Path(__file__).resolve().parents[1]
    if not (root / "demo" / "run.py").is_file():
        raise SystemExit("the demo moved to the repository's demo/ package: run `make demo`")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from demo.run import main as demo_main

    return demo_main(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
