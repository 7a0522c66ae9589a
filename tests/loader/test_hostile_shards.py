"""Hostile shards: verify and the loader run one sample check and agree on every shard; unused
and junk members are never read whole; a skipped final shard is counted; plain WebDataset
still reads our shards. Synthetic shards only (tests/loader/shards.py): no corpus needed."""

from __future__ import annotations

import io
import re
import tarfile
import tracemalloc

import numpy as np
import pytest

from brainomni.formats.manifest import content_hash
from brainomni.formats.sample import decode_raw, decode_sample, decode_tokens
from brainomni.loader.loader import ShardLoader
from brainomni.loader.reader import ReadConfig, ShardFailed, ShardSource, read_shard
from brainomni.manifests.verify import scan_shard, verify
from tests.loader.shards import (
    good_members,
    npy_with_header,
    sample_members,
    tar_bytes,
    write_manifest,
)

K0, K1 = "rec_0000000000", "rec_0000000001"
ONE = ReadConfig(attempts=1, backoff_s=0.0)
MAX_JSON = 1024 * 1024  # brainomni.formats.sample.Limits.max_json_bytes


def _replace(members, name, blob):
    return [(n, blob if n == name else b) for n, b in members]


def _object_npy() -> bytes:
    """An object-dtype ``.npy``: its header, then bytes standing for the pickle stream that
    would follow (written by hand: the test never pickles anything)."""
    buf = io.BytesIO()
    header = {"descr": "|O", "fortran_order": False, "shape": (4, 2)}
    np.lib.format.write_array_header_1_0(buf, header)
    buf.write(b"\x80\x04N." * 8)
    return buf.getvalue()


def _symlink_tar() -> bytes:
    buf = io.BytesIO()
    good = good_members(1)
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, blob in good[:3]:
            ti = tarfile.TarInfo(name)
            ti.size = len(blob)
            tar.addfile(ti, io.BytesIO(blob))
        link = tarfile.TarInfo(f"{K0}.json")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    return buf.getvalue()


def _cut_before_member(data: bytes, index: int) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return data[: tar.getmembers()[index].offset]


def hostile_shards() -> dict[str, tuple[bytes, int]]:
    """``{name: (tar bytes, samples the writer meant)}``: one good shard and hostile ones."""
    good = good_members(2)
    sig0 = f"{K0}.signal.npy"
    big_json = b'{"a":"' + b"x" * MAX_JSON + b'"}'
    cases = {
        "good": good,
        "object_dtype": _replace(good, sig0, _object_npy()),
        "huge_shape": _replace(
            good,
            sig0,
            npy_with_header(
                {"descr": "<f2", "fortran_order": False, "shape": (2**31, 2**31)}, bytes(128)
            ),
        ),
        "size_mismatch": _replace(
            good,
            sig0,
            npy_with_header({"descr": "<f2", "fortran_order": False, "shape": (4, 17)}, bytes(128)),
        ),
        "not_npy": _replace(good, sig0, b"hello, not an array"),
        "unknown_member": good[:2] + [(f"{K0}.junk", b"x" * 1000)] + good[2:],
        "oversize_member": _replace(good, f"{K0}.json", big_json),
        "deep_json": _replace(good, f"{K0}.json", b"[" * 200_000),
        "json_not_object": _replace(good, f"{K0}.json", b"[1, 2]"),
        "missing_member": [m for m in good if m[0] != f"{K0}.sensors.npy"],
        "duplicate_member": good[:4] + [good[0]] + good[4:],
        "not_consecutive": good[:2] + good[4:] + good[2:4],
        "channel_mismatch": _replace(good, f"{K0}.sensors.npy", sample_members(K0, c=5)[1][1]),
        "sensor_type_range": _replace(
            good,
            f"{K0}.sensor_type.npy",
            npy_with_header(
                {"descr": "|i1", "fortran_order": False, "shape": (4,)}, bytes([0, 1, 2, 7])
            ),
        ),
        "two_window_lengths": good[:4] + sample_members(K1, t=32),
    }
    out = {k: (tar_bytes(v), 2) for k, v in cases.items()}
    whole = out["good"][0]
    with tarfile.open(fileobj=io.BytesIO(whole)) as tar:
        sig1 = tar.getmembers()[4]  # sample 1's signal
    out["truncated_mid_member"] = (whole[: sig1.offset_data + sig1.size // 2], 2)
    out["truncated_at_sample"] = (_cut_before_member(whole, 4), 2)
    corrupt = bytearray(whole)
    corrupt[len(_cut_before_member(whole, 4)) + 148] ^= 0x01  # a header checksum digit
    out["damaged_header"] = (bytes(corrupt), 2)
    huge_sensors = npy_with_header(
        {"descr": "<f4", "fortran_order": False, "shape": (5000, 6)}, bytes(5000 * 24)
    )
    out["too_many_channels"] = (tar_bytes(_replace(good, f"{K0}.sensors.npy", huge_sensors)), 2)
    out["symlink_member"] = (_symlink_tar(), 1)
    return out


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    return write_manifest(root / "shards", hostile_shards())


def test_verify_and_loader_agree_on_every_hostile_shard(hostile):
    rep = verify(hostile)
    assert rep.checked == len(hostile["shards"])
    by_verify = {s["path"]: True for s in hostile["shards"]}
    for p in rep.problems:  # "<path>: unreadable (<error class>: <message>)"
        path, _, rest = p.partition(": ")
        by_verify[path] = re.match(r"unreadable \((\w+):", rest)[1]
    for cfg in (ONE, ReadConfig(attempts=1, backoff_s=0.0, verify_sha256=False)):
        by_loader = {}
        for s in hostile["shards"]:
            src = ShardSource(f"{hostile['shards_root']}/{s['path']}", s["sha256"], s["samples"])
            try:
                got = read_shard(src, None, decode_raw, cfg)
                by_loader[s["path"]] = True
                assert sorted(got) == [0, 1]
            except ShardFailed as exc:
                by_loader[s["path"]] = type(exc.__cause__).__name__
        assert by_loader == by_verify
    assert {p for p, ok in by_verify.items() if ok is True} == {"good.tar"}
    assert set(by_verify.values()) == {True, "SampleError", "ReadError"}
    text = "\n".join(rep.problems)
    for needle in ("object dtype", "header says", "unexpected tar member name", "over the"):
        assert needle in text


def test_good_shard_decodes_to_what_was_written(hostile):
    s = next(s for s in hostile["shards"] if s["path"] == "good.tar")
    src = ShardSource(f"{hostile['shards_root']}/good.tar", s["sha256"], 2)
    got = read_shard(src, None, decode_raw, ONE)
    want = dict(good_members(2))
    for i, key in enumerate((K0, K1)):
        ref = np.lib.format.read_array(io.BytesIO(want[f"{key}.signal.npy"]), allow_pickle=False)
        assert got[i]["key"] == key and np.array_equal(got[i]["signal"], ref)
        assert got[i]["signal"].dtype == np.float16 and got[i]["n"] == 4


def _peak(fn):
    """Peak Python heap (tracemalloc) while ``fn`` runs, and its result or exception."""
    tracemalloc.start()
    try:
        try:
            res = fn()
        except Exception as exc:  # noqa: BLE001 - returned for the caller to check
            res = exc
        return tracemalloc.get_traced_memory()[1], res
    finally:
        tracemalloc.stop()


def test_junk_and_unused_members_are_never_read_whole(tmp_path):
    junk = 8 * 1024 * 1024
    members = sample_members(K0)
    bad = members[:1] + [(f"{K0}.junk", bytes(junk))] + members[1:]
    c, t = 64, 49152  # one 12 MiB float32 signal: read whole only when the sample is wanted
    rng = np.random.default_rng(1)
    sig = rng.standard_normal((c, t)).astype(np.float32)
    from brainomni.formats.sample import encode_sample, members

    big = members(
        encode_sample(
            K0, sig, np.zeros((c, 6), np.float32), np.zeros(c, np.int8), {"recording_id": "r"}
        )
    )
    m = write_manifest(tmp_path, {"junk": (tar_bytes(bad), 1), "big": (tar_bytes(big), 1)})
    root = m["shards_root"]
    raw = ReadConfig(attempts=1, backoff_s=0.0, verify_sha256=False)  # no spooling copy

    peak, res = _peak(
        lambda: read_shard(ShardSource(f"{root}/junk.tar", None, 1), None, decode_raw, raw)
    )
    assert isinstance(res, ShardFailed) and ".junk" in str(res)
    assert peak < junk // 8, peak
    assert not verify(m).ok

    src = ShardSource(f"{root}/big.tar", None, 1)
    peak, res = _peak(lambda: read_shard(src, set(), decode_raw, raw))
    assert res == {} and peak < sig.nbytes // 4, peak
    peak, res = _peak(lambda: scan_shard(f"{root}/big.tar"))
    assert res[2] == 1 and peak < sig.nbytes // 4, peak
    got = read_shard(src, None, decode_raw, raw)  # wanted: read, and exact
    assert np.array_equal(got[0]["signal"], sig)


def test_skipped_final_shard_is_counted(tmp_path):
    """The last shard of a finite pass fails: no batch follows it, its skip still counts."""
    shards = {f"s{k}": (tar_bytes(good_members(4, prefix=f"r{k}")), 4) for k in range(3)}
    m = write_manifest(tmp_path, shards)
    last = tmp_path / m["shards"][-1]["path"]
    data = bytearray(last.read_bytes())
    data[700] ^= 0xFF  # digest mismatch
    last.write_bytes(bytes(data))
    ld = ShardLoader(
        m, "train", micro_batch=2, chunk=4, shuffle=False, max_epochs=1, read_config=ONE
    )
    batches = list(ld)
    assert sum(b["size"] for b in batches) == 8 and len(batches) == 4
    assert all("stats_only" not in b for b in batches)
    st = ld.stats()
    assert st["shards_skipped"] == 1 and st["samples_skipped"] == 4, st
    assert st["shards_read"] == 2 and st["samples"] == 8
    assert "sha256 mismatch" in st["skipped"][0]
    assert ld.state_dict()["cursors"]["0"]["epoch"] == 1  # the pass is complete
    assert ld.delivered == 4


def test_plain_webdataset_reads_our_shards(tmp_path):
    import webdataset as wds

    members = good_members(3)
    path = tmp_path / "shard-000000.tar"
    path.write_bytes(tar_bytes(members))
    want = dict(members)
    raw = list(wds.WebDataset(str(path), shardshuffle=False))
    assert [s["__key__"] for s in raw] == [f"rec_{i:010d}" for i in range(3)]
    for s in raw:
        d = decode_sample(s)
        ref = np.lib.format.read_array(
            io.BytesIO(want[f"{s['__key__']}.signal.npy"]), allow_pickle=False
        )
        assert np.array_equal(d["signal"], ref) and d["meta"]["recording_id"] == s["__key__"]
    # webdataset's own decoders (npy without pickles, json) give the same arrays
    dec = list(wds.WebDataset(str(path), shardshuffle=False).decode())
    for s in dec:
        assert np.array_equal(
            s["sensors.npy"],
            np.lib.format.read_array(io.BytesIO(want[f"{s['__key__']}.sensors.npy"])),
        )
        assert s["json"]["recording_id"] == s["__key__"]


def _token_members(key: str, dtype=np.int16) -> list[tuple[str, bytes]]:
    buf = io.BytesIO()
    tok = (np.arange(2 * 3 * 4) % 7).reshape(2, 3, 4).astype(dtype)
    np.lib.format.write_array(buf, tok, allow_pickle=dtype is object)
    return [(f"{key}.tokens.npy", buf.getvalue()), (f"{key}.json", b'{"source_key": "k"}')]


def test_token_shards_share_the_check(tmp_path):
    good = _token_members(K0) + _token_members(K1)
    bad = _token_members(K0) + _token_members(K1, dtype=object)
    raw_in_tokens = good_members(2)
    m = write_manifest(
        tmp_path,
        {
            "good": (tar_bytes(good), 2),
            "pickled": (tar_bytes(bad), 2),
            "raw": (tar_bytes(raw_in_tokens), 2),
        },
    )
    m["format"] = "brainomni.token-manifest/1"
    m["content_hash"] = content_hash(m)
    rep = verify(m)
    assert sorted(p.split(":")[0] for p in rep.problems) == ["pickled.tar", "raw.tar"]
    for s in m["shards"]:
        src = ShardSource(f"{m['shards_root']}/{s['path']}", s["sha256"], 2)
        if s["path"] == "good.tar":
            got = read_shard(src, None, decode_tokens, ONE)
            assert got[1]["tokens"].shape == (2, 3, 4) and got[1]["tokens"].dtype == np.int16
        else:
            with pytest.raises(ShardFailed):
                read_shard(src, None, decode_tokens, ONE)


def test_shard_longer_than_its_manifest_is_refused_while_fetching(hostile):
    s = next(s for s in hostile["shards"] if s["path"] == "good.tar")
    url = f"{hostile['shards_root']}/good.tar"
    with pytest.raises(ShardFailed, match="more than the"):
        read_shard(ShardSource(url, None, 2, s["bytes"] - 512), None, decode_raw, ONE)
    assert read_shard(ShardSource(url, None, 2, s["bytes"]), None, decode_raw, ONE).keys() == {0, 1}
