"""Ray job entry point of ``brainomni tokenize`` (same options; ``brainomni tokenize --help``);
here ``--executor`` defaults to ``ray``.

    python pipelines/tokenize_shards.py --tokenizer exports/tok \
        --source manifests/brainomni-omni/1.0.0/manifest.json \
        --dest s3://bucket/tokens/v1 [--address auto] [--batch-size 16] \
        [--overlap 0.25] [--shards-root URL] [--no-verify]

One task per shard; ``DEST/manifest.json`` is written last. Reruns skip shards already
tokenized by the same tokenizer. The tokenizer folder must be readable at the same path on
every node. The old --manifest still works (with a deprecation line): it is --source now.
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

COMMAND = "tokenize"  # the brainomni command this script runs


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    return brainomni(
        ["--executor", "ray", *args], prog="pipelines/tokenize_shards.py", commands=COMMAND
    )


if __name__ == "__main__":
    sys.exit(main())
