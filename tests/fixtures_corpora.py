"""Small test corpora built from the real recordings in ``../shared/data/meeg``.

Load as a pytest plugin (``pytest_plugins = ["tests.fixtures_corpora"]`` in the root
conftest). Every fixture is session-scoped, builds once into a temporary folder, and skips
the test when the real recordings are absent. Each yields a :class:`Corpus` that also says
what a crawl must find (``recordings``: relpath → expected fields; ``skipped``: relpath →
a substring of the skip reason).

* ``bids_eeg_corpus``: BIDS EEG written with mne-bids (BDF, EDF, BrainVision; three
  subjects, a bad channel in ``channels.tsv``, ``PowerLineFrequency`` including one
  inherited from a root-level sidecar, ``electrodes.tsv`` + ``coordsystem.json``,
  ``participants.tsv`` with a ``group`` column). Root ``ds990001``, DatasetVersion 1.0.0.
* ``bids_meg_corpus``: BIDS MEG (Neuromag FIF, CTF ``.ds``, KIT ``.con``, a FIF split into
  two parts, an empty-room recording). Root ``meg_study``; identity from the description.
* ``tuh_v1_corpus`` / ``tuh_v2_corpus``: TUH-style EDF trees in each layout, EDF rewritten
  with TUH channel names (``EEG FP1-REF``; ``-LE`` under ``02_tcp_le``).
* ``corrupt_bids_corpus``: BIDS EEG/MEG whose files are broken in the ways the ingest must
  survive (``failures``: relpath → what is wrong), beside one valid recording.
* ``s3_corpora``: all of the above uploaded to one bucket of the moto server
  (``{corpus.name: "s3://bucket/<root name>"}``); needs ``tests.fixtures_s3``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import meeg_file


@dataclass(frozen=True)
class Corpus:
    """A built test corpus and what crawling it must give."""

    root: Path
    kind: str  # "bids" or "tuh"
    name: str  # dataset name a crawl reports
    version: str  # dataset version a crawl reports
    recordings: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)  # corrupt corpus only

    def source(self, url: str | None = None, storage_options: dict | None = None) -> Any:
        """A :class:`brainomni.sources.Source` for this corpus at ``url`` (default: local)."""
        from brainomni.sources import Source

        pinned = self.kind == "tuh"
        return Source(
            url=url or str(self.root),
            kind=self.kind,
            name=self.name if pinned else "",
            version=self.version if pinned else "",
            storage_options=storage_options or {},
            line_freq=60.0 if pinned else None,
        )


def _meeg(rel: str) -> Path:
    return meeg_file(rel)


def _patch_json(path: Path, **changes: Any) -> None:
    data = json.loads(path.read_text())
    for k, v in changes.items():
        if v is None:
            data.pop(k, None)
        else:
            data[k] = v
    path.write_text(json.dumps(data, indent=2))


def _write_tsv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    lines = ["\t".join(header)] + ["\t".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------- BIDS EEG


def build_bids_eeg(root: Path) -> Corpus:
    import mne
    from mne_bids import BIDSPath, make_dataset_description, mark_channels, write_raw_bids

    specs = [  # (file, subject, session, task, run, acq, line_freq, bad, montage)
        ("BDF/test_bdf_stim_channel.bdf", "01", "01", "rest", "1", None, 50.0, "C4", True),
        ("EDF/test_reduced.edf", "02", None, "rest", None, None, 60.0, "A5", False),
        ("Brainvision/test_NO.vhdr", "03", None, "oddball", None, "highres", None, None, False),
    ]
    expected: dict[str, dict[str, Any]] = {}
    for rel, sub, ses, task, run, acq, lf, bad, montage in specs:
        raw = mne.io.read_raw(_meeg(rel), verbose="error")
        raw.info["line_freq"] = lf
        if montage:
            raw.set_montage("standard_1020", on_missing="ignore", verbose="error")
        bp = BIDSPath(
            subject=sub, session=ses, task=task, run=run, acquisition=acq, datatype="eeg", root=root
        )
        write_raw_bids(raw, bp, overwrite=True, allow_preload=False, verbose="error")
        if bad:
            mark_channels(bp, ch_names=[bad], status="bad", descriptions=["test"], verbose="error")
        found = bp.copy().update(suffix="eeg", extension=None).match()
        data = [p for p in found if p.extension in (".bdf", ".edf", ".vhdr")][0]
        relpath = Path(data.fpath).relative_to(root).as_posix()
        expected[relpath] = {
            "subject": sub,
            "session": ses or "",
            "task": task,
            "run": run or "",
            "acquisition": acq or "",
            "modality": "eeg",
            "format": {".bdf": "bdf", ".edf": "edf", ".vhdr": "brainvision"}[data.extension],
            "line_freq": lf,
            "bad_channels": (bad,) if bad else (),
            "electrodes": montage,
        }
    # sub-03 gets its line frequency from a root-level sidecar (BIDS inheritance).
    sub03 = root / "sub-03/eeg/sub-03_task-oddball_acq-highres_eeg.json"
    _patch_json(sub03, PowerLineFrequency=None)
    (root / "task-oddball_eeg.json").write_text(json.dumps({"PowerLineFrequency": 50}))
    expected[[k for k in expected if k.startswith("sub-03/")][0]]["line_freq"] = 50.0
    make_dataset_description(
        path=root, name="BrainOmni test EEG", dataset_type="raw", overwrite=True, verbose="error"
    )
    _patch_json(root / "dataset_description.json", DatasetVersion="1.0.0")
    _write_tsv(
        root / "participants.tsv",
        ["participant_id", "age", "sex", "group"],
        [
            ["sub-01", "31", "F", "control"],
            ["sub-02", "n/a", "M", "patient"],
            ["sub-03", "45", "n/a", "control"],
        ],
    )
    return Corpus(root, "bids", "ds990001", "1.0.0", expected)


# --------------------------------------------------------------------------- BIDS MEG


def build_bids_meg(root: Path) -> Corpus:
    import mne
    import mne_bids.write as mbw
    from mne_bids import BIDSPath, make_dataset_description, mark_channels, write_raw_bids

    def write(raw: Any, **entities: Any) -> BIDSPath:
        bp = BIDSPath(datatype="meg", root=root, **entities)
        write_raw_bids(raw, bp, overwrite=True, verbose="error")
        return bp

    expected: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    fif = _meeg("SSS/sample_audvis_trunc_raw_sss.fif")
    raw = mne.io.read_raw_fif(fif, verbose="error")
    raw.info["line_freq"] = 60.0
    bp = write(raw, subject="01", task="audvis")
    mark_channels(bp, ch_names=["MEG 2443"], status="bad", descriptions=["test"], verbose="error")
    expected["sub-01/meg/sub-01_task-audvis_meg.fif"] = {
        "subject": "01",
        "task": "audvis",
        "format": "fif",
        "line_freq": 60.0,
        "bad_channels_include": "MEG 2443",
    }
    ctf = mne.io.read_raw_ctf(_meeg("CTF/testdata_ctf_short_discontinuous.ds"), verbose="error")
    ctf.info["line_freq"] = 50.0
    write(ctf, subject="02", session="01", task="rest", run="1")
    expected["sub-02/ses-01/meg/sub-02_ses-01_task-rest_run-1_meg.ds"] = {
        "subject": "02",
        "session": "01",
        "task": "rest",
        "run": "1",
        "format": "ctf",
        "line_freq": 50.0,
        "folder": True,
    }
    kit = mne.io.read_raw_kit(_meeg("KIT/MQKIT_125_2sec.con"), verbose="error")
    kit.info["line_freq"] = 50.0
    write(kit, subject="03", task="words", acquisition="kit")
    expected["sub-03/meg/sub-03_task-words_acq-kit_meg.con"] = {
        "subject": "03",
        "task": "words",
        "acquisition": "kit",
        "format": "kit",
        "line_freq": 50.0,
    }
    # A FIF long enough to be split in two parts (mne-bids names them _split-01/_split-02).
    long = mne.concatenate_raws(
        [raw.copy().load_data(verbose="error") for _ in range(3)], verbose="error"
    )
    old, mbw._FIFF_SPLIT_SIZE = mbw._FIFF_SPLIT_SIZE, "5MB"
    try:
        write_raw_bids(
            long,
            BIDSPath(subject="04", task="long", datatype="meg", root=root),
            overwrite=True,
            allow_preload=True,
            format="FIF",
            verbose="error",
        )
    finally:
        mbw._FIFF_SPLIT_SIZE = old
    expected["sub-04/meg/sub-04_task-long_split-01_meg.fif"] = {
        "subject": "04",
        "task": "long",
        "format": "fif",
        "line_freq": 60.0,
        "parts": 2,
    }
    skipped["sub-04/meg/sub-04_task-long_split-02_meg.fif"] = "secondary split part"
    erm = mne.io.read_raw_fif(
        _meeg("SSS/test_move_anon_erm_raw.fif"), allow_maxshield=True, verbose="error"
    )
    erm.info["line_freq"] = 60.0
    erm.set_meas_date(raw.info["meas_date"])
    ebp = write(
        erm, subject="emptyroom", session=raw.info["meas_date"].strftime("%Y%m%d"), task="noise"
    )
    skipped[Path(ebp.fpath).relative_to(root).as_posix()] = "empty-room"
    make_dataset_description(
        path=root, name="BrainOmni test MEG", dataset_type="raw", overwrite=True, verbose="error"
    )
    _patch_json(root / "dataset_description.json", DatasetVersion=None)
    for rec in expected.values():
        rec.setdefault("modality", "meg")
    return Corpus(root, "bids", "BrainOmni test MEG", "", expected, skipped)


# --------------------------------------------------------------------------- TUH


_TUH_MAP = {"T7": "T3", "T8": "T4", "P7": "T5", "P8": "T6"}
_TUH_CHANNELS = [
    "FP1",
    "FP2",
    "F7",
    "F3",
    "FZ",
    "F4",
    "F8",
    "T3",
    "C3",
    "CZ",
    "C4",
    "T4",
    "T5",
    "P3",
    "PZ",
    "P4",
    "T6",
    "O1",
    "O2",
]


def _tuh_edf(dest: Path, reference: str) -> None:
    """An EDF with TUH channel names (``EEG FP1-REF``) from a real 64-channel EDF (10 s)."""
    import mne

    raw = mne.io.read_raw_edf(
        _meeg("EDF/test_edf_overlapping_annotations.edf"), preload=True, verbose="error"
    )
    raw.crop(0, 10 - 1 / raw.info["sfreq"])
    raw.set_annotations(None)
    names = {}
    for ch in raw.ch_names:
        base = ch.strip(".").upper()
        base = _TUH_MAP.get(base, base)
        if base in _TUH_CHANNELS and base not in names.values():
            names[ch] = base
    raw.pick(list(names))
    raw.rename_channels({ch: f"EEG {b}-{reference}" for ch, b in names.items()})
    dest.parent.mkdir(parents=True, exist_ok=True)
    mne.export.export_raw(dest, raw, fmt="edf", overwrite=True, verbose="error")


def build_tuh(root: Path, layout: str, cache: Path) -> Corpus:
    ref_edf, le_edf = cache / "tuh_ref.edf", cache / "tuh_le.edf"
    if not ref_edf.exists():
        _tuh_edf(ref_edf, "REF")
        _tuh_edf(le_edf, "LE")
    if layout == "v1":
        files = {
            "edf/01_tcp_ar/000/00000254/s005_2010_11_15/00000254_s005_t000.edf": (
                "00000254",
                "005",
                "000",
                "01_tcp_ar",
                "2010-11-15",
            ),
            "edf/01_tcp_ar/000/00000254/s005_2010_11_15/00000254_s005_t001.edf": (
                "00000254",
                "005",
                "001",
                "01_tcp_ar",
                "2010-11-15",
            ),
            "edf/02_tcp_le/000/00000258/s002_2003_07_21/00000258_s002.edf": (
                "00000258",
                "002",
                "",
                "02_tcp_le",
                "2003-07-21",
            ),
        }
        bad = "edf/01_tcp_ar/000/00000254/s005_2010_11_15/notes.edf"
        others = [
            "edf/01_tcp_ar/000/00000254/s005_2010_11_15/00000254_s005.txt",
            "edf/01_tcp_ar/000/00000254/s005_2010_11_15/00000254_s005_t000.tse",
        ]
    else:
        files = {
            "edf/000/aaaaaaaa/s001_2015_12_30/01_tcp_ar/aaaaaaaa_s001_t000.edf": (
                "aaaaaaaa",
                "001",
                "000",
                "01_tcp_ar",
                "2015-12-30",
            ),
            "edf/000/aaaaaaaa/s002_2016_01_05/02_tcp_le/aaaaaaaa_s002_t000.edf": (
                "aaaaaaaa",
                "002",
                "000",
                "02_tcp_le",
                "2016-01-05",
            ),
            "edf/001/aaaaaabc/s001_2012_04_02/03_tcp_ar_a/aaaaaabc_s001_t001.edf": (
                "aaaaaabc",
                "001",
                "001",
                "03_tcp_ar_a",
                "2012-04-02",
            ),
        }
        bad = "edf/001/aaaaaabc/s001_2012_04_02/03_tcp_ar_a/aaaaaabc_s009_t000.edf"  # session mismatch
        others = ["edf/000/aaaaaaaa/s001_2015_12_30/01_tcp_ar/aaaaaaaa_s001_t000.csv"]
    expected = {}
    for rel, (subject, session, token, montage, date) in files.items():
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(le_edf if "_le" in montage else ref_edf, dest)
        expected[rel] = {
            "subject": subject,
            "session": session,
            "run": token,
            "modality": "eeg",
            "format": "edf",
            "line_freq": 60.0,
            "extra": {
                "montage": montage,
                "reference": montage.split("_tcp_")[1],
                "layout": layout,
                "session_date": date,
            },
        }
    for rel in [bad, *others]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ref_edf, root / rel) if rel == bad else (root / rel).write_text("x\n")
    return Corpus(root, "tuh", f"tuh_{layout}", "2.0.1", expected, {bad: "not a TUH recording"})


# --------------------------------------------------------------------------- corrupt inputs


def build_corrupt(root: Path) -> Corpus:
    """Broken inputs in BIDS places; sidecars minimal (the crawl does not need more)."""
    import numpy as np

    def place(sub: str, dt: str, name: str) -> Path:
        p = root / f"sub-{sub}" / dt / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    edf = _meeg("EDF/test_reduced.edf").read_bytes()
    n_records = int(edf[236:244].decode().strip())
    failures: dict[str, str] = {}
    expected: dict[str, dict[str, Any]] = {}
    ok = place("01", "eeg", "sub-01_task-rest_eeg.bdf")
    shutil.copyfile(_meeg("BDF/test_bdf_stim_channel.bdf"), ok)
    expected["sub-01/eeg/sub-01_task-rest_eeg.bdf"] = {"format": "bdf"}
    cases = {
        "02": ("sub-02_task-rest_eeg.edf", edf[: len(edf) // 2 + 7], "truncated EDF"),
        "03": ("sub-03_task-rest_eeg.edf", b"", "zero-byte file"),
        "04": ("sub-04_task-rest_eeg.edf", np.random.default_rng(0).bytes(4096), "random bytes"),
        "06": (
            "sub-06_task-rest_eeg.edf",
            edf[:236] + f"{n_records * 4:<8d}".encode() + edf[244:],
            "EDF header promises more records than the file holds",
        ),
    }
    for sub, (name, data, why) in cases.items():
        place(sub, "eeg", name).write_bytes(data)
        failures[f"sub-{sub}/eeg/{name}"] = why
    vhdr = _meeg("Brainvision/test_NO.vhdr")
    stem = "sub-05_task-rest_eeg"
    text = vhdr.read_text(encoding="latin-1").replace("test_NO.eeg", f"{stem}.eeg")
    place("05", "eeg", f"{stem}.vhdr").write_text(
        text.replace("test_NO.vmrk", f"{stem}.vmrk"), encoding="latin-1"
    )
    vmrk = (
        vhdr.with_suffix(".vmrk")
        .read_text(encoding="latin-1")
        .replace("test_NO.eeg", f"{stem}.eeg")
    )
    place("05", "eeg", f"{stem}.vmrk").write_text(vmrk, encoding="latin-1")
    failures[f"sub-05/eeg/{stem}.vhdr"] = "BrainVision header whose .eeg is missing"
    ds_src = _meeg("CTF/testdata_ctf_short_discontinuous.ds")
    ds = place("07", "meg", "sub-07_task-rest_meg.ds")
    shutil.copytree(ds_src, ds, ignore=shutil.ignore_patterns("*.meg4"))
    for f in list(ds.iterdir()):
        if f.stem == ds_src.stem:
            f.rename(ds / f"sub-07_task-rest_meg{f.suffix}")
    failures["sub-07/meg/sub-07_task-rest_meg.ds"] = "CTF .ds without its .meg4"
    (root / "dataset_description.json").write_text(
        json.dumps(
            {"Name": "BrainOmni corrupt inputs", "BIDSVersion": "1.9.0", "DatasetVersion": "0.0.1"}
        )
    )
    for rel, why in failures.items():
        expected[rel] = {"format": _fmt_of(rel), "failure": why}
    return Corpus(root, "bids", "BrainOmni corrupt inputs", "0.0.1", expected, {}, failures)


def _fmt_of(rel: str) -> str:
    return {".edf": "edf", ".vhdr": "brainvision", ".ds": "ctf", ".bdf": "bdf"}[Path(rel).suffix]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def bids_eeg_corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return build_bids_eeg(tmp_path_factory.mktemp("bids_eeg") / "ds990001")


@pytest.fixture(scope="session")
def bids_meg_corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return build_bids_meg(tmp_path_factory.mktemp("bids_meg") / "meg_study")


@pytest.fixture(scope="session")
def _tuh_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tuh_cache")


@pytest.fixture(scope="session")
def tuh_v1_corpus(tmp_path_factory: pytest.TempPathFactory, _tuh_cache: Path) -> Corpus:
    return build_tuh(tmp_path_factory.mktemp("tuh_v1") / "tuh_v1", "v1", _tuh_cache)


@pytest.fixture(scope="session")
def tuh_v2_corpus(tmp_path_factory: pytest.TempPathFactory, _tuh_cache: Path) -> Corpus:
    return build_tuh(tmp_path_factory.mktemp("tuh_v2") / "tuh_v2", "v2", _tuh_cache)


@pytest.fixture(scope="session")
def corrupt_bids_corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return build_corrupt(tmp_path_factory.mktemp("corrupt") / "corrupt_inputs")


@pytest.fixture(scope="session")
def s3_corpora(
    s3_server: Any,
    bids_eeg_corpus: Corpus,
    bids_meg_corpus: Corpus,
    tuh_v1_corpus: Corpus,
    tuh_v2_corpus: Corpus,
    corrupt_bids_corpus: Corpus,
) -> dict[str, str]:
    """Every corpus uploaded to one bucket: ``{corpus.name: "s3://bucket/<root name>"}``."""
    bucket = s3_server.make_bucket("corpora")
    return {
        c.name: s3_server.upload_dir(c.root, f"{bucket}/{c.root.name}")
        for c in (
            bids_eeg_corpus,
            bids_meg_corpus,
            tuh_v1_corpus,
            tuh_v2_corpus,
            corrupt_bids_corpus,
        )
    }
