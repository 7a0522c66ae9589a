"""Tokenize's rerun skip: a finished token shard is reused only when it was made from the
same tokenizer, the same source manifest and the same source shard (its completion key).

The tokenizer is replaced by a cheap stand-in (counted calls, tokens derived from the
samples): what is tested here is which shards a rerun redoes, not the model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import brainomni.tokenize as tk
from tests.conftest import MEEG_DIR

pytestmark = pytest.mark.skipif(MEEG_DIR is None, reason="needs ../shared/data/meeg")


@pytest.fixture
def counted(monkeypatch):
    calls: list[str] = []

    def fake_tokens(model, samples, batch_size, overlap_ratio):
        calls.extend(s["key"] for s in samples)
        return [np.full((2, 3, 1), len(s["key"]) + model, np.int16) for s in samples]

    monkeypatch.setattr(tk, "tokenize_samples", fake_tokens)
    monkeypatch.setattr(
        tk, "_model", lambda path: int(Path(path, "model.safetensors").read_bytes()[0])
    )
    return calls


def _tokenizer(folder: Path, weights: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"kind": "tokenizer"}))
    (folder / "model.safetensors").write_bytes(weights)
    return folder


def test_rerun_redoes_exactly_what_changed(tmp_path, counted):
    from tests.loader.data import packed_manifest

    src = json.loads(packed_manifest("tokenizer-10s").read_text())
    root = str(packed_manifest("tokenizer-10s").parents[3] / "shards")
    n_samples = sum(s["samples"] for s in src["shards"])
    tok = _tokenizer(tmp_path / "tok", b"\x01weights-a")
    dest = str(tmp_path / "tokens")

    first = tk.tokenize_corpus(tok, src, dest, shards_root=root)
    assert len(counted) == n_samples
    counted.clear()
    again = tk.tokenize_corpus(tok, src, dest, shards_root=root)  # nothing changed
    assert counted == [] and again["shards"] == first["shards"]

    # a new version of the source manifest (here: the same shards, another content hash):
    # every token shard was made from the old one and is redone
    changed = dict(src, version="1.0.1", content_hash="0" * 64)
    tk.tokenize_corpus(tok, changed, dest, shards_root=root)
    assert len(counted) == n_samples
    counted.clear()

    # a source shard whose bytes no longer match the manifest is refused, not tokenized: a
    # failed ledger row (class ShardFailed), no manifest, the other shards done
    one = json.loads(json.dumps(changed))
    one["shards"][0]["sha256"] = "f" * 64
    one["content_hash"] = "1" * 64
    from brainomni.ingest.ledger import LEDGER_FILE
    from brainomni.pipeline import Ledger, StageFailed, StageRow

    manifest_before = Path(dest, "manifest.json").read_bytes()
    with pytest.raises(StageFailed, match="sha256 mismatch"):
        tk.tokenize_corpus(tok, one, dest, shards_root=root)
    assert Path(dest, "manifest.json").read_bytes() == manifest_before
    rows = {r.key: r for r in Ledger(dest, StageRow).read()}
    assert Path(dest, LEDGER_FILE).exists() and len(rows) == len(src["shards"])
    bad = rows[one["shards"][0]["path"]]
    assert (bad.outcome, bad.error_class) == ("failed", "ShardFailed")
    assert all(r.outcome == "ok" for k, r in rows.items() if k != bad.key)

    # another tokenizer: everything redone, and the tokens differ
    counted.clear()
    tok_b = _tokenizer(tmp_path / "tok-b", b"\x02weights-b")
    second = tk.tokenize_corpus(tok_b, changed, dest, shards_root=root)
    assert len(counted) == n_samples
    assert [s["sha256"] for s in second["shards"]] != [s["sha256"] for s in first["shards"]]


def test_index_records_its_completion_key(tmp_path, counted):
    from tests.loader.data import packed_manifest

    src = json.loads(packed_manifest("tokenizer-10s").read_text())
    root = str(packed_manifest("tokenizer-10s").parents[3] / "shards")
    tok = _tokenizer(tmp_path / "tok", b"\x01w")
    dest = tmp_path / "tokens"
    tk.tokenize_corpus(tok, src, str(dest), shards_root=root, splits=["train"])
    idx = json.loads(next(dest.rglob("shard-*.json")).read_text())
    assert idx["source_manifest_hash"] == src["content_hash"]
    assert len(idx["completion_key"]) == 64
    # a torn index (killed while writing) is not trusted: the shard is redone
    first = next(dest.rglob("shard-*.json"))
    first.write_text('{"completion_key": ')
    counted.clear()
    tk.tokenize_corpus(tok, src, str(dest), shards_root=root, splits=["train"])
    assert len(counted) > 0


def test_token_manifest_publishes_verifies_and_diffs(tmp_path, counted):
    """A tokenize run's manifest is published under a name and version with a card, verified
    shard by shard (the token sample check) and compared like a signal manifest."""
    import hashlib

    from brainomni.manifests.diff import diff
    from brainomni.manifests.publish import ManifestExists, load_manifest, publish
    from brainomni.manifests.verify import verify
    from tests.loader.data import packed_manifest

    src = json.loads(packed_manifest("tokenizer-10s").read_text())
    root = str(packed_manifest("tokenizer-10s").parents[3] / "shards")
    dest = tmp_path / "tokens"
    written = tk.tokenize_corpus(
        _tokenizer(tmp_path / "tok", b"\x01w"), src, str(dest), shards_root=root
    )
    out = tmp_path / "published"
    path = publish(str(dest), "brainomni-tokens", "1.0.0", out)
    m = load_manifest(path)
    assert m["format"] == "brainomni.token-manifest/1" and m["version"] == "1.0.0"
    assert m["shards"] == written["shards"] and m["totals"]["shards"] == len(written["shards"])
    body = {k: v for k, v in m.items() if k not in ("created_at", "content_hash")}
    canon = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    assert m["content_hash"] == hashlib.sha256(canon).hexdigest()
    card = (path.parent / "card.md").read_text()
    assert m["content_hash"] in card and (path.parent / "samples.png").stat().st_size > 0
    rep = verify(m)
    assert rep.ok and rep.checked == len(m["shards"])
    with pytest.raises(ManifestExists):
        publish(str(dest), "brainomni-tokens", "1.0.0", out)

    first = dest / m["shards"][0]["path"]
    first.write_bytes(first.read_bytes()[:-1024])  # truncated: sha, bytes and tar all fail
    rep = verify(m)
    assert not rep.ok and any(m["shards"][0]["path"] in p for p in rep.problems)
    other = dict(m, tokenizer={**m["tokenizer"], "overlap_ratio": 0.5})
    assert diff(m, other) == ["tokenizer: overlap_ratio 0.25 -> 0.5"]
    assert diff(m, m) == []
