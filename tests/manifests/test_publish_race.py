"""Two publishes of one version at once: exactly one wins, and only its card is published.

The race is made deterministic: the second publish builds its manifest (slow in real life)
while the first one runs from start to end; no timing is involved."""

from __future__ import annotations

import json

import pytest

import brainomni.manifests.card as card_mod
import brainomni.manifests.publish as pub
from brainomni.formats.manifest import MANIFEST_FORMAT, content_hash
from brainomni.manifests.publish import ManifestExists, publish


def _manifest(run: str) -> dict:
    m = {"format": MANIFEST_FORMAT, "name": "race", "version": "1.0.0", "run": run}
    m["content_hash"] = content_hash(m)
    return m


def _fake_card(m, folder):
    (folder / "card.md").write_text(f"card of run {m['run']}\n")
    (folder / "hours.png").write_bytes(m["run"].encode())
    return folder / "card.md"


def test_losing_publish_leaves_no_card(tmp_path, monkeypatch):
    out = tmp_path / "manifests"
    monkeypatch.setattr(card_mod, "write_card", _fake_card)

    def build(shards_url, name, version, **kw):
        if shards_url == "loser":  # while the loser builds, the winner publishes completely
            assert publish("winner", name, version, out) == folder / "manifest.json"
        return _manifest(shards_url)

    monkeypatch.setattr(pub, "build_manifest", build)
    folder = out / "race" / "1.0.0"
    with pytest.raises(ManifestExists, match="appeared while publishing"):
        publish("loser", "race", "1.0.0", out)
    assert json.loads((folder / "manifest.json").read_text())["run"] == "winner"
    assert (folder / "card.md").read_text() == "card of run winner\n"
    assert (folder / "hours.png").read_bytes() == b"winner"
    assert sorted(p.name for p in folder.iterdir()) == ["card.md", "hours.png", "manifest.json"]
    # and a later publish of the same version is refused before anything is built
    monkeypatch.setattr(pub, "build_manifest", lambda *a, **k: pytest.fail("built"))
    with pytest.raises(ManifestExists, match="immutable"):
        publish("third", "race", "1.0.0", out)


def test_failed_card_publishes_nothing(tmp_path, monkeypatch):
    def broken(m, folder):
        (folder / "card.md").write_text("half")
        raise RuntimeError("plot failed")

    monkeypatch.setattr(card_mod, "write_card", broken)
    monkeypatch.setattr(pub, "build_manifest", lambda url, *a, **k: _manifest(url))
    with pytest.raises(RuntimeError, match="plot failed"):
        publish("x", "race", "1.0.0", tmp_path)
    assert list((tmp_path / "race" / "1.0.0").iterdir()) == []
