"""Ray job entry point of ``brainomni pack`` (same options; ``brainomni pack --help``).

    python pipelines/pack.py --source s3://bucket/corpus --profile tokenizer-10s \
        --dest s3://bucket/packs/tokenizer-10s [--address auto] [--dtype float32]

Plans once (a frozen ``plan.json`` under DEST), runs one task per shard, writes
``index.json`` last. Reruns skip finished shards and give byte-identical output. The old
--store still works (with a deprecation line): it is --source now.
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

COMMAND = "pack"  # the brainomni command this script runs


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    return brainomni(list(args), prog="pipelines/pack.py", commands=COMMAND)


if __name__ == "__main__":
    sys.exit(main())
