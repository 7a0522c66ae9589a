"""The sample codec: what SampleWriter writes, plain webdataset reads (raw and token shards),
byte-identical for the same samples, and the checked reader agrees with numpy."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest

from brainomni.formats.sample import (
    SampleWriter,
    count_samples,
    decode_raw,
    decode_sample,
    encode_sample,
    encode_tokens,
    iter_samples,
)


def _raw(n: int = 3, c: int = 5, t: int = 32):
    rng = np.random.default_rng(7)
    out = []
    for i in range(n):
        sig = rng.standard_normal((c + i, t)).astype(np.float16)
        sensors = rng.standard_normal((c + i, 6)).astype(np.float32)
        types = (np.arange(c + i) % 3).astype(np.int8)
        out.append((f"rec_{i:010d}", sig, sensors, types, {"recording_id": "rec", "start": i}))
    return out


def _shard(samples, schema: str = "raw") -> bytes:
    buf = io.BytesIO()
    with SampleWriter(buf, schema) as w:
        for s in samples:
            w.write(encode_sample(*s) if schema == "raw" else encode_tokens(*s))
    return buf.getvalue()


def test_shards_are_deterministic_with_fixed_member_metadata():
    a, b = _shard(_raw()), _shard(_raw())
    assert a == b and len(a) % 10240 == 0  # whole tar records
    with tarfile.open(fileobj=io.BytesIO(a)) as tar:
        ms = tar.getmembers()
    assert [m.name for m in ms[:4]] == [
        "rec_0000000000.json",
        "rec_0000000000.sensor_type.npy",
        "rec_0000000000.sensors.npy",
        "rec_0000000000.signal.npy",
    ]
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in ms} == {
        (0, 0, 0, "", "", 0o444)
    }
    assert count_samples(io.BytesIO(a)) == 3


def test_plain_webdataset_reads_raw_and_token_shards(tmp_path):
    import webdataset as wds

    raw = _raw()
    (tmp_path / "raw.tar").write_bytes(_shard(raw))
    rng = np.random.default_rng(3)
    toks = [
        (f"t_{i:010d}", rng.integers(0, 512, (2, 4, 3)).astype(np.int16), {"source_key": str(i)})
        for i in range(2)
    ]
    (tmp_path / "tok.tar").write_bytes(_shard(toks, "tokens"))

    # a user's pipeline: webdataset's own default decoders (npy without pickles, json)
    got = list(wds.WebDataset(str(tmp_path / "raw.tar"), shardshuffle=False).decode())
    assert [g["__key__"] for g in got] == [r[0] for r in raw]
    for g, (_, sig, sensors, types, meta) in zip(got, raw, strict=True):
        np.testing.assert_array_equal(g["signal.npy"], sig)
        np.testing.assert_array_equal(g["sensors.npy"], sensors)
        np.testing.assert_array_equal(g["sensor_type.npy"], types)
        assert g["json"] == meta
    # ... and ours, mapped over webdataset's raw samples
    mine = list(wds.WebDataset(str(tmp_path / "tok.tar"), shardshuffle=False).map(decode_sample))
    for d, (key, tok, meta) in zip(mine, toks, strict=True):
        assert d["__key__"] == key and d["meta"] == meta
        assert d["tokens"].dtype == np.int16 and np.array_equal(d["tokens"], tok)


def test_checked_reader_matches_numpy():
    raw = _raw()
    data = _shard(raw)
    got = [
        decode_raw(s.key, s.members) for s in iter_samples(io.BytesIO(data), want=lambda i: True)
    ]
    for g, (key, sig, sensors, types, _) in zip(got, raw, strict=True):
        assert g["key"] == key and g["n"] == sig.shape[0]
        ref = np.load(io.BytesIO(encode_sample(key, sig, sensors, types, {})["signal.npy"]))
        np.testing.assert_array_equal(g["signal"], ref)
        np.testing.assert_array_equal(g["sensor_type"], types)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda s: s.pop("json"), "members"),
        (lambda s: s.update({"pyd": b"x"}), "members"),
        (lambda s: s.update({"__key__": "a.b"}), "unsafe sample key"),
        (lambda s: s.update({"signal.npy": np.arange(4).tobytes()}), "npy"),
    ],
)
def test_writer_refuses_samples_outside_the_schema(mutate, match):
    s = encode_sample(*_raw(1)[0])
    mutate(s)
    with pytest.raises(ValueError, match=match), SampleWriter(io.BytesIO(), "raw") as w:
        w.write(s)


def test_encoder_refuses_other_dtypes():
    key, sig, sensors, types, meta = _raw(1)[0]
    with pytest.raises(ValueError, match="dtype"):
        encode_sample(key, sig.astype(np.float64), sensors, types, meta)
    with pytest.raises(ValueError, match="dtype"):
        encode_tokens(key, np.zeros((1, 2, 3), np.uint16), {})
