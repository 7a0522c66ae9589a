"""Ray job entry point of ``brainomni ingest`` (same options; ``brainomni ingest --help``).

    python pipelines/ingest.py --source s3://openneuro.org/ds004148 --anon --dest s3://bucket/corpus
    ray job submit --address http://HEAD:8265 -- python pipelines/ingest.py --catalog manifests/corpus.toml --dest s3://...

Steps: crawl every source into a frozen work list (DEST/crawl/), clean each recording as a
Ray task into DEST/recordings/<dataset>/<recording_id>.zarr, append a ledger row per
recording (DEST/ledger/), compact it into DEST/ledger.parquet and write DEST/summary.json.
Rerunning the same command resumes: finished recordings are not redone. Old options still
work with a deprecation line: --config (now --set), --log-level (now -v / -q).
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

COMMAND = "ingest"  # the brainomni command this script runs


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    return brainomni(list(args), prog="pipelines/ingest.py", commands=COMMAND)


if __name__ == "__main__":
    sys.exit(main())
