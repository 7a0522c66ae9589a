"""Every stage (ingest, pack, tokenize) through the shared core: killed with SIGKILL mid-run
(right after a unit wrote its output, before its ledger row), then run again, ends with
outputs byte-identical to an uninterrupted run and one ledger row per unit.

The kill is deterministic (a fault hook in the test's executor, see ``killable.py``). The
corpus is tiny: the 3 TUH recordings of ``tuh_v1_corpus`` (10 s each), packed into 4-s
windows one per shard, tokenized by a stand-in tokenizer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from brainomni.ingest.ledger import LEDGER_FILE, PARTS_DIR, LedgerRow
from brainomni.pipeline import Ledger, LocalExecutor, StageRow
from tests.conftest import ROOT
from tests.pipeline import killable

RUN_ONLY = ("ledger", "summary.json")  # per-run records (times, workers): not outputs


def _files(root: Path) -> dict[str, str]:
    """sha256 of every output file under ``root`` (the ledger and summary left out; the token
    manifest without its creation time and its own location, which differ by design)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if not p.is_file() or rel.split("/")[0] in RUN_ONLY or rel == LEDGER_FILE:
            continue
        data = p.read_bytes()
        if rel == "manifest.json":
            m = json.loads(data)
            for k in ("created_at", "shards_root", "content_hash"):  # content_hash: of both
                m.pop(k)
            data = json.dumps(m, sort_keys=True).encode()
        out[rel] = hashlib.sha256(data).hexdigest()
    return out


@pytest.fixture(scope="module")
def reference(tuh_v1_corpus, tmp_path_factory):
    """Uninterrupted runs of the three stages, each fed by the previous one."""
    root = tmp_path_factory.mktemp("reference")
    tree = root / "tuh"
    shutil.copytree(tuh_v1_corpus.root, tree)
    source = dataclasses.asdict(tuh_v1_corpus.source(str(tree)))
    ingest = {"source": source, "dest": str(root / "ingest")}
    killable.run("ingest", ingest, LocalExecutor())
    pack = {"src": str(root / "ingest"), "dest": str(root / "pack")}
    index = killable.run("pack", pack, LocalExecutor())
    manifest = {
        "format": "brainomni.manifest/1",
        "name": "t",
        "version": "1",
        "shards_root": pack["dest"],
        "shards": index["shards"],
        "content_hash": "c" * 64,
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    tok = root / "tok"
    tok.mkdir()
    (tok / "config.json").write_text(json.dumps({"kind": "tokenizer"}))
    (tok / "model.safetensors").write_bytes(b"\x05weights")
    tokenize = {"tokenizer": str(tok), "manifest": str(root / "manifest.json")}
    tokenize["dest"] = str(root / "tokens")
    mp = pytest.MonkeyPatch()
    mp.setattr("brainomni.tokenize.tokenize_samples", killable.fake_tokens)
    mp.setattr("brainomni.tokenize._model", killable.fake_model)
    killable.run("tokenize", tokenize, LocalExecutor())
    yield {"ingest": ingest, "pack": pack, "tokenize": tokenize}
    mp.undo()


@pytest.mark.parametrize("stage", ["ingest", "pack", "tokenize"])
def test_sigkill_and_rerun_gives_identical_outputs(stage, reference, tmp_path):
    args = dict(reference[stage], dest=str(tmp_path / stage))
    ref_dir = Path(reference[stage]["dest"])
    n_units = len(Ledger(str(ref_dir), LedgerRow if stage == "ingest" else StageRow).read())
    assert n_units >= 3
    env = {**os.environ, killable.KILL_ENV: "2", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "tests.pipeline.killable", stage, json.dumps(args)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-3000:]
    killed = Path(args["dest"])
    row_type = LedgerRow if stage == "ingest" else StageRow
    # killed after the 2nd unit's output, before its row: one part, no compacted ledger
    assert len(list((killed / PARTS_DIR).glob("part-*"))) == 1
    assert not (killed / LEDGER_FILE).exists() and not (killed / "summary.json").exists()

    result = killable.run(stage, args, LocalExecutor())  # the rerun
    assert _files(killed) == _files(ref_dir)  # byte-identical outputs
    raw = Ledger(str(killed), row_type).read(raw=True)
    assert sorted(r.key for r in raw) == sorted({r.key for r in raw})  # no duplicate rows
    assert len(raw) == n_units and all(r.outcome == "ok" for r in raw)
    assert not list((killed / PARTS_DIR).glob("*"))  # every part folded
    summary = json.loads((killed / "summary.json").read_text())
    # the unit whose row was lost is found done by its completion marker, not redone
    assert summary["already_done"] >= 1
    if stage == "ingest":
        assert result["run"]["not_rerun"] == 1 and result["by_outcome"] == {"ok": n_units}
