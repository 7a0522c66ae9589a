"""Fixtures of the pretraining tests, shared by every test file here (package scope: the
2-rank runs are made once). Helpers are in :mod:`tests.train.pretrain_run`."""

from __future__ import annotations

import json

import pytest

from tests.conftest import MEEG_DIR, SKIP_REASON
from tests.train.pretrain_run import TOK_ARGS, killed_tok, records, tok


@pytest.fixture(scope="package")
def s3_data(s3_server, tmp_path_factory):
    """Both packs uploaded to a bucket; their manifests; ``{profile: (manifest, s3 root)}``."""
    if MEEG_DIR is None:
        pytest.skip(SKIP_REASON)
    from tests.loader.data import packed_manifest

    bucket = s3_server.make_bucket("train")
    out = {}
    for profile in ("tokenizer-10s", "omni-30s"):
        m = packed_manifest(profile)
        root = json.loads(m.read_text())["shards_root"]
        out[profile] = (m, s3_server.upload_dir(root, f"{bucket}/{profile}"))
    out["bucket"] = bucket
    return out


@pytest.fixture(scope="package")
def tok_run(s3_data, tmp_path_factory):
    """The 2-rank tokenizer run every comparison starts from (``TOK_ARGS``)."""
    out = tmp_path_factory.mktemp("tok") / "run"
    tok(s3_data, out, *TOK_ARGS)
    return out


@pytest.fixture(scope="package")
def tok_killed(s3_data, tok_run, tmp_path_factory):
    """``tok_run`` SIGKILLed after step 5 (its last checkpoint is step 3); tests resume copies."""
    out = tmp_path_factory.mktemp("tok-killed") / "run"
    p = killed_tok(s3_data, out, 5, *TOK_ARGS)
    assert p.returncode != 0, p.stderr[-3000:]
    assert max(records(out, "train")) == 5, p.stderr[-3000:]
    # configured as `brainomni pretrain` configures tok_run (what --resume continues)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg == json.loads((tok_run / "config.json").read_text())
    return out
