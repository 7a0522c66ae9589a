"""Entry point of ``brainomni publish``, ``brainomni verify`` and ``brainomni diff`` (same
options; ``brainomni publish --help``).

    python pipelines/publish.py publish --source URL --name NAME --version X.Y.Z [--dest DIR]
    python pipelines/publish.py verify MANIFEST
    python pipelines/publish.py diff MANIFEST_A MANIFEST_B

Exit codes: 0 = what was checked holds (published; every shard verified; the two manifests
have the same content), 1 = it does not (leakage, version exists, corrupt/missing shard,
manifests differ), 2 = usage error, 3 = object storage unreachable (verify: the shards
could not be read within the retry window, so nothing is said about them), 4 = object
storage refused access (credentials, permissions, endpoint configuration). The old --shards
and --out of publish still work (with a deprecation line): they are --source and --dest now.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
_ROOT = Path(__file__).resolve().parents[1]
if (_ROOT / "brainomni").is_dir() and str(_ROOT) not in sys.path:  # run from a checkout
    sys.path.insert(0, str(_ROOT))

from brainomni.cli import main as brainomni  # noqa: E402

COMMANDS = ("publish", "verify", "diff")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    return brainomni(list(args), prog="pipelines/publish.py", commands=COMMANDS)


if __name__ == "__main__":
    sys.exit(main())
