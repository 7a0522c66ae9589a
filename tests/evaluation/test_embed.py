"""``brainomni.embed`` on Raw and Epochs of a real EEG and a real MEG recording: the windows,
tokens and features equal those of the pack path (preprocess -> pack -> shard samples ->
model), computed independently; Epochs equal the Raw they were cut from."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import meeg_file

torch = pytest.importorskip("torch")
mne = pytest.importorskip("mne")

EEG = "EDF/test_edf_overlapping_annotations.edf"  # 64 EEG, 128 Hz, 124 s
MEG = "SSS/sample_audvis_trunc_raw_sss.fif"  # 306 MEG + 60 EEG, 300 Hz, 1 s (tiled)


@pytest.fixture(scope="module")
def models():
    from brainomni.models import BrainOmni, BrainTokenizer
    from brainomni.train.config import TEST_TOKENIZER_MODEL

    torch.manual_seed(0)
    tok = BrainTokenizer(**TEST_TOKENIZER_MODEL).eval()
    omni = BrainOmni(
        "tiny", tokenizer=tok, lm_dim=16, lm_head=4, lm_depth=2, num_quantizers_used=2
    ).eval()
    return tok, omni


def _raw(kind: str):
    """20 s of the recording (the 1-s MEG file mirrored and tiled, as the demo does)."""
    raw = mne.io.read_raw(meeg_file(EEG if kind == "eeg" else MEG), preload=True, verbose="error")
    sf = raw.info["sfreq"]
    n = int(round(20 * sf))
    if raw.n_times < n:
        d = raw.get_data()
        seg = np.concatenate([d, d[:, ::-1]], axis=1)
        big = np.tile(seg, (1, n // seg.shape[1] + 1))[:, :n]
        big += (
            0.05
            * big.std(axis=1, keepdims=True)
            * np.random.default_rng(0).standard_normal(big.shape)
        )
        return mne.io.RawArray(big, raw.info, verbose="error")
    return raw.crop(0, (n - 1) / sf)


@pytest.fixture(scope="module", params=["eeg", "meg"])
def recording(request, models, tmp_path_factory):
    """(kind, raw, embedding of the raw, pack-path samples sorted by start)."""
    from brainomni import embed
    from brainomni.clean import preprocess_recording
    from brainomni.formats.sample import decode_raw
    from brainomni.loader.reader import ReadConfig, ShardSource, read_shard
    from brainomni.pack import get_profile
    from brainomni.pack.run import pack
    from brainomni.records import RecordingRef

    raw = _raw(request.param)
    emb = embed(raw, models[0])
    # the pack path, independently: the same recording cleaned into a store, packed into
    # float32 shards, read back as samples
    tmp = tmp_path_factory.mktemp(f"pack-{request.param}")
    raw.save(str(tmp / "in_raw.fif"), verbose="error")
    res = preprocess_recording(RecordingRef(uri=str(tmp / "in_raw.fif")), out=str(tmp / "r.zarr"))
    assert res.outcome == "ok", res.reason
    index = pack(
        [str(tmp / "r.zarr")], str(tmp / "shards"), get_profile("tokenizer-10s", dtype="float32")
    )
    samples = []
    for s in index["shards"]:
        src = ShardSource(str(tmp / "shards" / s["path"]), s["sha256"], s["samples"])
        samples += read_shard(src, None, decode_raw, ReadConfig()).values()
    samples.sort(key=lambda s: int(s["key"].rsplit("_", 1)[1]))
    return request.param, raw, emb, samples


def _batch(samples):
    x = torch.from_numpy(np.stack([s["signal"] for s in samples])).float()
    pos = torch.from_numpy(np.stack([s["sensors"] for s in samples]))
    st = torch.from_numpy(np.stack([s["sensor_type"] for s in samples])).long()
    return x, pos, st


def test_raw_equals_the_pack_path(recording, models):
    kind, _, emb, samples = recording
    tok = models[0]
    assert len(samples) == len(emb.starts) == 2 and not emb.rejected
    assert [int(s["key"].rsplit("_", 1)[1]) for s in samples] == emb.starts.tolist()
    types = set(emb.sensor_type.tolist())
    assert types == ({0} if kind == "eeg" else {0, 1, 2})
    x, pos, st = _batch(samples)
    np.testing.assert_allclose(emb.windows, x.numpy(), atol=1e-6)
    np.testing.assert_allclose(emb.sensors, pos[0].numpy(), atol=1e-7)
    feats, idx = tok.tokenize(x, pos, st)
    assert emb.features.shape == tuple(feats.shape) and emb.tokens.shape == tuple(idx.shape)
    np.testing.assert_allclose(emb.features, feats.numpy(), rtol=1e-4, atol=1e-5)
    assert (emb.tokens == idx.numpy()).mean() > 0.99


def test_epochs_equal_the_raw_they_were_cut_from(recording, models):
    from brainomni import embed

    _, raw, emb, _ = recording
    # proj=False: MNE applies a file's SSP projectors (the MEG file's average EEG
    # reference) when it builds Epochs, which the Raw does not have applied
    ep = mne.make_fixed_length_epochs(raw, duration=10.0, preload=True, proj=False, verbose="error")
    got = embed(ep, models[0])
    assert got.epochs.tolist() == [0, 1] and got.starts.tolist() == emb.starts.tolist()
    np.testing.assert_allclose(got.windows, emb.windows, atol=1e-5)
    np.testing.assert_allclose(got.features, emb.features, rtol=1e-4, atol=1e-4)


def test_brainomni_features(recording, models):
    from brainomni import embed

    _, raw, _, samples = recording
    omni = models[1]
    got = embed(raw, omni, window_s=10.0)
    x, pos, st = _batch(samples)
    with torch.no_grad():
        want = omni.encode(x, pos, st)
        _, idx = omni.tokens(x, pos, st)
    assert got.kind == "omni" and got.features.shape == tuple(want.shape)
    assert want.shape[1] == 4 and want.shape[-1] == 16  # (N, sources, W, lm_dim)
    np.testing.assert_allclose(got.features, want.numpy(), rtol=1e-4, atol=1e-4)
    assert (got.tokens == idx.numpy()).mean() > 0.99


def test_bad_inputs_end_with_a_reason(models, tmp_path):
    from brainomni import embed
    from brainomni.errors import SkipRecording

    tok = models[0]
    no_pos = mne.io.read_raw(meeg_file("EEGLAB/test_raw.set"), preload=True, verbose="error")
    with pytest.raises(SkipRecording, match="no placeable"):
        embed(no_pos.crop(0, 12), tok)
    raw = _raw("eeg")
    short = mne.make_fixed_length_epochs(raw, duration=1.0, preload=True, verbose="error")
    with pytest.raises(ValueError, match="shorter than one 2-s tokenizer window"):
        embed(short, tok)
    with pytest.raises(ValueError, match="multiple of the tokenizer"):
        embed(raw, tok, window_s=3.0)
    with pytest.raises(TypeError, match="mne.io.Raw or mne.Epochs"):
        embed(np.zeros((2, 100)), tok)


def test_cli_writes_npz(models, tmp_path):
    from brainomni.cli import main
    from brainomni.train.export import MODEL_FORMAT

    tok = models[0]
    from dataclasses import asdict

    from safetensors.torch import save_file

    exp = tmp_path / "tok"
    exp.mkdir()
    save_file(
        {k: v.contiguous() for k, v in tok.state_dict().items()}, str(exp / "model.safetensors")
    )
    cfg = {
        "format": MODEL_FORMAT,
        "kind": "tokenizer",
        "tokenizer_config": asdict(tok.config),
        "omni_config": None,
    }
    import json

    (exp / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "e.npz"
    assert (
        main(
            [
                "embed",
                str(meeg_file(EEG)),
                "--model",
                str(exp),
                "--out",
                str(out),
                "--epochs-s",
                "10",
            ]
        )
        == 0
    )
    z = np.load(out)
    assert z["tokens"].shape[0] == z["features"].shape[0] == len(z["epochs"]) >= 10
    assert (
        main(
            ["embed", str(meeg_file("EEGLAB/test_raw.set")), "--model", str(exp), "--out", str(out)]
        )
        == 2
    )
