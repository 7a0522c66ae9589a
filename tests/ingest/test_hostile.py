"""Hostile inputs never kill an ingest (issue #15, defects 2-4): one ledger row per
recording, stores only for the usable ones, no half-written folders, a failure table.

The end-to-end test runs the real entry point (``pipelines/ingest.py``) on a local Ray
(one session for this module) over :mod:`tests.ingest.hostile_corpus`.
"""

from __future__ import annotations

import glob
import json
from pathlib import Path

import numpy as np
import pytest

from brainomni.errors import RecordingFailed
from brainomni.ingest import read_ledger
from brainomni.ingest.task import IngestTask, run_task
from brainomni.records import RecordingRef
from brainomni.sensors.table import HEAD_RADIUS_M, build_sensor_table
from tests.conftest import meeg_file
from tests.ingest.hostile_corpus import build_hostile


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, tuple[str, str]]]:
    root = tmp_path_factory.mktemp("hostile") / "ds_hostile"
    return root, build_hostile(root)


# --------------------------------------------------------------------------- geometry


def _eeg_info(names=("C3", "C4", "Cz")):
    import mne

    return mne.create_info(list(names), 256.0, "eeg")


GOOD = {"C3": [-0.06, 0.0, 0.06], "C4": [0.06, 0.0, 0.06], "Cz": [0.0, 0.0, 0.09]}


@pytest.mark.parametrize(
    ("cz", "fragment"),
    [
        ([1e308, 0.0, 0.0], "Cz (electrodes.tsv: (1e+308, 0, 0) m)"),  # inf in float32
        ([-1e39, 0.0, 0.0], "not finite in float32"),
        ([0.0, 0.0, 85.0], "more than 0.3 m from the median"),  # mm read as m
    ],
)
def test_absurd_electrode_is_a_failed_outcome(cz: list[float], fragment: str) -> None:
    """Defect 3: one absurd coordinate raised AssertionError in the sensor table."""
    with pytest.raises(RecordingFailed) as e:
        build_sensor_table(_eeg_info(), electrodes={**GOOD, "Cz": cz})
    assert e.value.error_class == "ImplausibleGeometry"
    assert fragment in e.value.reason and "C3 (" not in e.value.reason  # only the culprit


def test_coincident_and_plausible_geometry() -> None:
    with pytest.raises(RecordingFailed, match="all 3 within 1 mm") as e:
        build_sensor_table(_eeg_info(), electrodes={n: [0.01, 0.01, 0.01] for n in GOOD})
    assert e.value.error_class == "ImplausibleGeometry"
    table = build_sensor_table(_eeg_info(), electrodes=GOOD)
    assert table.pos_source == ["electrodes.tsv"] * 3
    np.testing.assert_allclose(table.pos, [GOOD[n] for n in table.names], rtol=1e-6)


def test_unit_sphere_positions_are_scaled_to_a_head() -> None:
    """MNE puts Neuroscan CNT layout positions on a 1 m sphere: scaled, and said so."""
    import mne

    raw = mne.io.read_raw_cnt(
        meeg_file("CNT/scan41_short.cnt"), data_format="int16", verbose="error"
    )
    table = build_sensor_table(raw.info)
    file_pos = {c["ch_name"]: c["loc"][:3] for c in raw.info["chs"]}
    expected = np.array([file_pos[n] for n in table.names]) * 0.095  # MNE HEAD_SIZE_DEFAULT
    np.testing.assert_allclose(table.pos, expected, rtol=1e-6, atol=1e-9)
    assert HEAD_RADIUS_M == mne.defaults.HEAD_SIZE_DEFAULT
    assert set(table.pos_source) == {"file:unit-sphere*0.095"}


def test_unit_sphere_electrodes_tsv_is_scaled_too() -> None:
    """mne-bids writes a CNT's unit-sphere layout into electrodes.tsv declared in metres:
    scaled like the file's, and said so; a sphere of another radius still fails."""
    import mne

    raw = mne.io.read_raw_cnt(
        meeg_file("CNT/scan41_short.cnt"), data_format="int16", verbose="error"
    )
    unit = {c["ch_name"]: list(map(float, c["loc"][:3])) for c in raw.info["chs"]}
    info = raw.info.copy()
    with info._unlock():
        for ch in info["chs"]:
            ch["loc"][:3] = np.nan  # positions only in the sidecar, as in a BIDS dataset
    table = build_sensor_table(info, electrodes=unit)
    expected = np.array([unit[n] for n in table.names]) * 0.095
    np.testing.assert_allclose(table.pos, expected, rtol=1e-6, atol=1e-9)
    assert set(table.pos_source) == {"electrodes.tsv:unit-sphere*0.095"}
    bigger = {n: [v * 1.5 for v in xyz] for n, xyz in unit.items()}
    with pytest.raises(RecordingFailed) as e:
        build_sensor_table(info, electrodes=bigger)
    assert e.value.error_class == "ImplausibleGeometry"


# --------------------------------------------------------------------------- last resort


def test_unexpected_exception_becomes_a_row(tmp_path: Path, monkeypatch) -> None:
    """A bug met on one input is a failed row naming the file and the class, the task's
    half-written store is removed, and the row is in the ledger."""
    import brainomni.clean as pre  # ingest.task looks the name up there

    ref = RecordingRef(uri=str(tmp_path / "sub-01_eeg.edf"), dataset="d", relpath="sub-01_eeg.edf")
    task = IngestTask(ref=ref, dest=str(tmp_path / "out"))
    partial = Path(task.store).parent / f".{Path(task.store).name}.tmp-deadbeef"

    def boom(*args, **kwargs):
        partial.mkdir(parents=True)  # as a writer killed half-way would leave it
        raise KeyError("coil_type")

    monkeypatch.setattr(pre, "preprocess_recording", boom)
    row = run_task(task, worker="t")
    assert (row.outcome, row.error_class) == ("failed", "Unexpected.KeyError")
    assert ref.uri in row.reason and "coil_type" in row.reason
    assert not partial.exists()
    assert [(r.recording_id, r.error_class) for r in read_ledger(task.dest)] == [
        (ref.recording_id, "Unexpected.KeyError")
    ]


def test_ray_driver_records_an_escaped_task_error(tmp_path: Path) -> None:
    from brainomni.ingest import IngestStage
    from brainomni.pipeline import Work
    from brainomni.pipeline.ray import error_row

    ref = RecordingRef(uri=str(tmp_path / "x.edf"), dataset="d", relpath="x.edf")
    task = IngestTask(ref=ref, dest=str(tmp_path / "out"))
    stage = IngestStage(dest=task.dest, tasks=[task])
    row = error_row(stage, Work(ref.recording_id, task), ValueError("cannot deserialize"))
    assert (row.outcome, row.error_class) == ("failed", "TaskError.ValueError")
    assert ref.uri in row.reason and "cannot deserialize" in row.reason
    assert [r.error_class for r in read_ledger(task.dest)] == ["TaskError.ValueError"]


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_hostile_dataset_through_the_ray_ingest(hostile, tmp_path: Path, capsys) -> None:
    import zarr

    from tests.ingest.test_ledger_plan import _entry_point

    root, expected = hostile
    assert len(expected) == 30
    dest = tmp_path / "out"
    argv = ["--source", str(root), "--dest", str(dest), "--executor", "ray", "--num-cpus", "2"]
    assert _entry_point().main(argv) == 0
    printed = capsys.readouterr().out
    rows = {r.relpath: r for r in read_ledger(str(dest))}
    assert set(rows) == set(expected)  # one row per recording, nothing else
    for rel, (outcome, what) in expected.items():
        r = rows[rel]
        assert r.outcome == outcome, (rel, r.error_class, r.reason)
        if outcome == "failed":
            assert r.error_class and not r.error_class.startswith(("Unexpected", "TaskError"))
            assert what in ("", r.error_class), (rel, r.error_class, r.reason)
            assert rel.split("/")[0] in r.reason  # the reason names the file
            assert not r.store and r.bytes_out is None
            continue
        qc = zarr.open_group(r.store, mode="r").attrs["qc"]
        sources = qc["eeg_pos_sources"]
        assert sum(sources.values()) == r.n_eeg == 3
        assert qc["eeg_pos_mixed"] == (what == "mixed"), (rel, sources)
        if what == "electrodes":
            assert sources == {"electrodes.tsv": 3} and qc["sidecars"]["units"] in ("mm", "cm")
        if what == "template":
            assert set(sources) == {"montage:standard_1005"}
    stores = sorted(glob.glob(str(dest / "recordings" / "*" / "*.zarr")))
    assert len(stores) == sum(1 for o, _ in expected.values() if o == "ok")
    assert glob.glob(str(dest / "recordings" / "*" / ".*")) == []  # no .tmp leftovers
    # the QC says which decoding was used and why electrodes went unused
    sub04 = zarr.open_group(rows["sub-04/eeg/sub-04_task-rest_eeg.bdf"].store, mode="r")
    assert sub04.attrs["qc"]["sidecars"]["encoding"] == "latin-1"
    assert sub04.attrs["qc"]["sidecars"]["electrodes_without_position"] == ["Cz"]
    sub06 = zarr.open_group(rows["sub-06/eeg/sub-06_task-rest_eeg.bdf"].store, mode="r")
    assert "units unknown" in sub06.attrs["qc"]["sidecars"]["note"]
    assert "Cz" in rows["sub-11/eeg/sub-11_task-rest_eeg.bdf"].reason
    assert "furlongs" in rows["sub-13/eeg/sub-13_task-rest_eeg.bdf"].reason
    # the failure table: per class, count, example and fix; printed and in summary.json
    summary = json.loads((dest / "summary.json").read_text())
    table = {e["error_class"]: e for e in summary["failures"]}
    by_class: dict[str, int] = {}
    for r in rows.values():
        if r.outcome == "failed":
            by_class[r.error_class] = by_class.get(r.error_class, 0) + 1
    assert {k: e["count"] for k, e in table.items()} == by_class
    assert table["BadCoordinateUnits"]["example"] == "sub-13/eeg/sub-13_task-rest_eeg.bdf"
    assert "EEGCoordinateUnits" in table["BadCoordinateUnits"]["fix"]
    assert "failures (20), by error class:" in printed
    for cls, e in table.items():
        assert f"{cls:<28} {e['count']:5d}" in printed


def test_cnt_failure_reason_is_mnes_message(tmp_path: Path) -> None:
    """read_raw_cnt re-raises with a traceback as its message: the reason shows MNE's own
    message (the chained exception's), not a ``File "..."`` line."""
    import mne

    from brainomni.clean import preprocess_recording

    path = tmp_path / "cut.cnt"
    path.write_bytes(meeg_file("CNT/scan41_short.cnt").read_bytes()[:1000])
    with pytest.raises(Exception) as e:  # noqa: PT011 - whatever MNE raises
        # the registry always passes an explicit width (decided from the header)
        mne.io.read_raw_cnt(path, data_format="int16", verbose="error")
    assert 'File "' in str(e.value)  # MNE's message is a traceback ...
    inner = str(e.value.__cause__ or e.value.__context__)  # ... of this one
    res = preprocess_recording(str(path))
    assert res.outcome == "failed" and res.error_class.startswith("ReadError.")
    assert inner and inner in res.reason and 'File "' not in res.reason
