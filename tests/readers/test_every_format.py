"""Every format of the registry, good and broken, through ``preprocess_recording``.

Good inputs are the real vendor files of ``../shared/data/meeg`` (or a format that is
skipped unread); broken ones are a truncated copy, a zero-byte file and random bytes with
the right extension (and garbage companions, so the reader itself is reached). Each must
end as ok / skipped(reason) / failed(reason, error class), never with a programming error
and never with an error class naming one.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from brainomni.clean import preprocess_recording
from brainomni.readers.formats import FORMATS, GENERIC
from brainomni.records import RecordingRef
from tests.conftest import MEEG_DIR, meeg_file

PROGRAMMING = ("TypeError", "AttributeError", "KeyError", "IndexError", "NameError")

# format -> a real recording of it (relative to the shared folder)
REAL = {
    "fif": "SSS/sample_audvis_trunc_raw_sss.fif",
    "ctf": "CTF/testdata_ctf_short_discontinuous.ds",
    "kit": "KIT/MQKIT_125_2sec.con",
    "edf": "EDF/test_edf_overlapping_annotations.edf",
    "bdf": "BDF/test_bdf_stim_channel.bdf",
    "gdf": "GDF/test_1ch.gdf",
    "brainvision": "Brainvision/test_NO.vhdr",
    "eeglab": "EEGLAB/test_raw.set",
    "cnt": "CNT/scan41_short.cnt",
    "ant": "antio/CA_208/test_CA_208_start_stop.cnt",
    "egi_mff": "EGI/test_egi_multiepoch_eprime.mff",
    "curry": "curry/Ref_channel_omitted Curry7.dat",
}
# the outcome each real file must reach (README "Outcomes of the shared real recordings")
REAL_OUTCOME = {
    "fif": "ok",
    "ctf": "ok",
    "kit": "ok",
    "edf": "ok",
    "bdf": "ok",
    "cnt": "ok",
    "egi_mff": "ok",
    "ant": "ok",
    "curry": "ok",
    "gdf": "skipped",
    "brainvision": "skipped",
    "eeglab": "skipped",
}
# name of a broken input for formats without a usable extension
SPECIAL_NAME = {"bti": "c,rfDC", "ant": "x.cnt", "bci2k": "x.dat", GENERIC: "x.xyz"}
SPECIAL_HEAD = {"ant": b"RIFF", "bci2k": b"BCI2000V= 3.0 HeaderLen= 120 SourceCh= 2\r\n"}
FOLDER_MEMBERS = {"ctf": ("x.res4", "x.meg4"), "egi_mff": ("info.xml", "signal1.bin")}


def _check(res, what: str) -> None:
    assert res.outcome in ("ok", "skipped", "failed"), what
    if res.outcome != "ok":
        assert res.reason, what
        assert res.error_class, what
        assert not any(p in res.error_class for p in PROGRAMMING), (what, res.error_class)


def _run(path: Path, fmt: str | None = None):
    return preprocess_recording(RecordingRef(uri=str(path), format=fmt))


def _main_name(key: str) -> str:
    spec = FORMATS[key]
    if key in SPECIAL_NAME:
        return SPECIAL_NAME[key]
    return "x" + max(spec.extensions, key=len)


def _garbage(tmp: Path, key: str, n: int, rng) -> Path:
    """A file (or folder) of format ``key`` filled with ``n`` random bytes (0: empty), with
    garbage required companions."""
    import fsspec

    spec = FORMATS[key]
    main = tmp / _main_name(key)
    if spec.folder:
        main.mkdir()
        for member in FOLDER_MEMBERS.get(key, ("x.bin",)):
            (main / member).write_bytes(rng.bytes(n))
        return main
    main.write_bytes(SPECIAL_HEAD.get(key, b"")[:n] + rng.bytes(n) if n else b"")
    if spec.companions is not None and n:
        try:
            comps = spec.companions(fsspec.filesystem("file"), str(main))
        except ValueError:
            comps = []
        for c in comps:
            if not os.path.exists(c.path):
                Path(c.path).write_bytes(rng.bytes(n))
    return main


def _truncated(tmp: Path, rel: str) -> Path:
    """The real recording beside its companions (links), its main data cut in half."""
    src = meeg_file(rel)
    if src.is_dir():
        dest = tmp / src.name
        dest.mkdir()
        biggest = max(src.iterdir(), key=lambda p: p.stat().st_size if p.is_file() else 0)
        for p in src.iterdir():
            if p == biggest:
                (dest / p.name).write_bytes(p.read_bytes()[: p.stat().st_size // 2])
            else:
                os.symlink(p, dest / p.name)
        return dest
    stem = src.name.split(".")[0]
    for p in src.parent.iterdir():
        if p.name.startswith(stem) and p != src:
            os.symlink(p, tmp / p.name)
    dest = tmp / src.name
    dest.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    return dest


@pytest.mark.parametrize("key", sorted(FORMATS))
def test_broken_inputs_end_as_outcomes(key: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(abs(hash(key)) % 2**32)
    for kind, n in (("zero", 0), ("garbage", 4096)):
        d = tmp_path / kind
        d.mkdir()
        path = _garbage(d, key, n, rng)
        for fmt in (None, key):  # detected from the name, and forced as a crawler may
            res = _run(path, fmt)
            _check(res, f"{key} {kind} fmt={fmt}")
            assert res.outcome != "ok", (key, kind)
    if key in REAL and MEEG_DIR is not None:
        d = tmp_path / "cut"
        d.mkdir()
        _check(_run(_truncated(d, REAL[key])), f"{key} truncated")


@pytest.mark.parametrize("key", sorted(REAL))
def test_real_file_of_each_format(key: str) -> None:
    res = _run(meeg_file(REAL[key]))
    _check(res, key)
    assert res.outcome == REAL_OUTCOME[key], (key, res.reason)
    assert res.fmt in (key, None) or res.outcome != "ok"


def test_formats_without_eeg_meg_are_skipped_unread(tmp_path: Path) -> None:
    skipping = sorted(k for k, f in FORMATS.items() if f.skip_reason)
    assert {"eyelink", "snirf", "nirx", "boxy", "hitachi"} <= set(skipping)
    for key in skipping:
        path = tmp_path / _main_name(key)
        path.write_text("** CONVERTED FROM D:\\rec.edf using edfapi\nMSG 1 start\n")
        res = _run(path)
        assert res.outcome == "skipped" and res.error_class == "NotEEGMEG", key
        assert "no EEG/MEG" in res.reason, res.reason


@pytest.mark.parametrize(
    "rel",
    [
        "sub-01/ieeg/sub-01_task-rest_ieeg.edf",
        "sub-01/eeg/sub-01_task-rest_acq-ecog_eeg.edf",
        "sub-01/ses-1/ieeg/sub-01_ses-1_task-x_acq-seeg_ieeg.edf",
    ],
)
def test_intracranial_bids_recordings_are_skipped(rel: str, tmp_path: Path) -> None:
    """A real EDF placed as BIDS iEEG: skipped for what it is, not cleaned as scalp EEG."""
    path = tmp_path / rel
    path.parent.mkdir(parents=True)
    os.symlink(meeg_file("EDF/test_edf_overlapping_annotations.edf"), path)
    res = _run(path)
    assert res.outcome == "skipped" and res.error_class == "NotEEGMEG"
    assert "intracranial" in res.reason


def test_coverage_of_the_registry(capsys) -> None:
    """Which formats a real (or MNE-written) file covers; the rest get only broken inputs
    (or are skipped unread). Printed with -s; asserted so coverage cannot silently shrink."""
    rows = []
    for key in sorted(FORMATS):
        if key in REAL:
            how = f"real: {REAL[key]}"
        elif FORMATS[key].skip_reason:
            how = "skipped unread (no EEG/MEG)"
        else:
            how = "broken inputs only (no real file available)"
        rows.append(f"{key:12s} {how}")
    print("\n".join(rows))
    covered = {k for k in FORMATS if k in REAL}
    assert covered == set(REAL) and len(covered) >= 12
    assert set(REAL) <= set(FORMATS)


def test_truncated_kit_fails_while_cleaning_not_crashing(tmp_path: Path) -> None:
    """Cut in half, the KIT file opens and its first/last samples read; whole blocks do not.
    The guarded reads make that a recorded failure naming the file."""
    res = _run(_truncated(tmp_path, REAL["kit"]))
    assert res.outcome == "failed" and res.error_class.startswith("ReadError."), res.reason
    assert "MQKIT_125_2sec.con" in res.reason and "truncated or corrupt" in res.reason


def test_guarded_reads_keep_the_fast_fif_reader() -> None:
    import mne

    from brainomni.readers import open_raw
    from brainomni.readers.fifblocks import fif_block_reader

    with open_raw(str(meeg_file(REAL["fif"]))) as opened:
        assert isinstance(opened.raw, mne.io.Raw)
        picks = np.arange(10)
        reader = fif_block_reader(opened.raw, picks)
        assert reader is not None
        np.testing.assert_allclose(
            reader(0, 50), opened.raw.get_data(picks=picks, start=0, stop=50), rtol=1e-6
        )
        reader.close()
