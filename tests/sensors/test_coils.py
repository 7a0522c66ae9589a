"""Every MNE coil typed deliberately; CTF compensation grades do not change the sensor table."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from brainomni.readers import open_raw
from brainomni.records import GRAD
from brainomni.sensors import build_sensor_table, coil_class, meg_compensation_grade
from brainomni.sensors.coils import (
    AXIAL,
    COIL_KINDS,
    MAGNETOMETER,
    NOT_MEG,
    PLANAR,
    REFERENCE,
    base_coil,
    coil_table_markdown,
    compensation_grade,
)
from tests.conftest import meeg_file

CTF = "CTF/testdata_ctf_short_discontinuous.ds"
README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_mne_coil_constant_is_typed() -> None:
    from mne.io.constants import FIFF

    mne_names = {k[len("FIFFV_COIL_") :] for k in FIFF if k.startswith("FIFFV_COIL_")}
    assert set(COIL_KINDS) == mne_names
    by_value: dict[int, set[str]] = {}
    for name, (cls, _) in COIL_KINDS.items():
        by_value.setdefault(int(FIFF[f"FIFFV_COIL_{name}"]), set()).add(cls)
    assert all(len(v) == 1 for v in by_value.values()), by_value  # aliases agree


def _coil_def_classes() -> dict[int, int]:
    """coil id -> class code (1 magnetometer, 2 axial, 3 planar) from MNE's coil_def.dat."""
    import mne

    text = (Path(mne.__file__).parent / "data" / "coil_def.dat").read_text()
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(\d+)\s+(\d+)\s+\d+\s+\d+\s", line)
        if m:
            out[int(m.group(2))] = int(m.group(1))
    return out


def test_classes_agree_with_mne_coil_definitions() -> None:
    """Independent check: the geometry class MNE's forward model uses for each coil."""
    from mne.io.constants import FIFF

    defs = _coil_def_classes()
    assert len(defs) >= 30
    expected = {1: {MAGNETOMETER, REFERENCE}, 2: {AXIAL, REFERENCE}, 3: {PLANAR}}
    for name, (cls, _) in COIL_KINDS.items():
        value = int(FIFF[f"FIFFV_COIL_{name}"])
        if value in defs:
            assert cls in expected[defs[value]], (name, cls, defs[value])
            assert (cls == REFERENCE) == ("REF" in name or "_R_" in name), name
        elif cls != NOT_MEG:  # a MEG coil MNE has no geometry for: only the old 24/W ones
            assert name in {"NM_24", "VV_PLANAR_W", "VV_MAG_W", "AXIAL_GRAD_5CM"}, name
    assert coil_class(FIFF.FIFFV_COIL_EEG) is None and coil_class(99999) is None


@pytest.mark.parametrize("grade", [0, 1, 2, 3])
def test_grade_bits_are_ignored_for_the_coil(grade: int) -> None:
    from mne.io.constants import FIFF

    stored = int(FIFF.FIFFV_COIL_CTF_GRAD) | (grade << 16)
    assert base_coil(stored) == 5001 and compensation_grade(stored) == grade
    assert coil_class(stored) == AXIAL
    assert coil_class(int(FIFF.FIFFV_COIL_CTF_REF_GRAD) | (grade << 16)) == REFERENCE


def test_readme_coil_table_is_the_mapping() -> None:
    text = README.read_text()
    table = coil_table_markdown()
    assert table in text, "README's MEG coil table differs: paste coil_table_markdown()"
    assert text.count("| `FIFFV_COIL_") == len(COIL_KINDS)


@pytest.fixture(scope="module")
def ctf_grades(tmp_path_factory):
    """The shared CTF 275 recording saved as FIF at compensation grades 0-3 (MNE)."""
    import mne

    raw = mne.io.read_raw_ctf(str(meeg_file(CTF)), preload=True, verbose="error")
    root = tmp_path_factory.mktemp("ctf_grades")
    out = {}
    for g in range(4):
        r = raw.copy().apply_gradient_compensation(g, verbose="error")
        out[g] = root / f"ctf_grade{g}_raw.fif"
        r.save(str(out[g]), verbose="error")
    return out


def test_ctf_every_grade_keeps_273_gradiometers(ctf_grades) -> None:
    tables = {}
    for g, path in ctf_grades.items():
        with open_raw(str(path)) as opened:
            info = opened.raw.info
            assert opened.raw.compensation_grade == g  # MNE's own reading of the grade
            assert meg_compensation_grade(info) == g
            tables[g] = build_sensor_table(info)
    for g, t in tables.items():
        assert t.summary() == {"EEG": 8, "MAG": 0, "GRAD": 273}, g
        assert np.all(t.types[: t.count(GRAD)] == GRAD)
        assert t.names == tables[0].names
        np.testing.assert_array_equal(t.pos, tables[0].pos)
        np.testing.assert_array_equal(t.ori, tables[0].ori)
        assert not any("unsupported" in d.reason for d in t.dropped)


@pytest.mark.parametrize("grade", [1, 2, 3])
def test_ctf_compensated_store_matches_mne(grade, ctf_grades, tmp_path) -> None:
    """The cleaned store of a compensated CTF file = MNE's whole-file chain on the same file
    (README tolerance; grade 0 is the shared .ds itself, in tests/preprocess)."""
    from brainomni.clean import preprocess_recording
    from brainomni.signal.config import CleanConfig
    from brainomni.stores.recording import open_recording
    from tests.preprocess.conftest import tile_recording
    from tests.preprocess.test_mne_equivalence import _compare, _mne_chain

    path = tile_recording(ctf_grades[grade], tmp_path / "tiled_raw.fif", 60_000)
    cfg = CleanConfig(detect_bads=False, eeg_reference="none", line_freq=50.0)
    res = preprocess_recording(str(path), out=str(tmp_path / "r.zarr"), config=cfg)
    assert res.outcome == "ok", res.reason
    assert res.table.summary() == {"EEG": 8, "MAG": 0, "GRAD": 273}
    g = open_recording(str(tmp_path / "r.zarr"))
    assert g.attrs["qc"]["meg_compensation_grade"] == grade
    med, worst = _compare(
        g["signal"][:], _mne_chain(path, g.attrs["ch_names"]), g["sensor_type"][:]
    )
    print(f"grade {grade}: relative RMS error median {med:.2e}, worst {worst:.2e}")
    assert med <= 1e-3 and worst <= 1e-2, (med, worst)


@pytest.mark.parametrize(
    "coil",
    ["QUSPIN_ZFOPM_MAG", "QUSPIN_ZFOPM_MAG2", "FIELDLINE_OPM_MAG_GEN1", "KERNEL_OPM_MAG_GEN1"],
)
def test_opm_is_mag_oriented_along_its_sensing_direction(coil: str) -> None:
    import mne
    from mne.io.constants import FIFF

    from brainomni.records import MAG

    info = mne.create_info(["OPM1", "OPM2"], 1000.0, "mag")
    rng = np.random.default_rng(1)
    sensing = rng.normal(size=(2, 3))
    with info._unlock():
        for ch, s in zip(info["chs"], sensing, strict=True):
            ch["coil_type"] = getattr(FIFF, f"FIFFV_COIL_{coil}")
            ch["loc"][:3] = rng.normal(size=3) * 0.1
            ch["loc"][3:9] = rng.normal(size=6)  # transverse axes: not the orientation
            ch["loc"][9:12] = 2.5 * s
    table = build_sensor_table(info)
    assert list(table.types) == [MAG, MAG]
    expected = sensing / np.linalg.norm(sensing, axis=1, keepdims=True)
    np.testing.assert_allclose(table.ori, expected, atol=1e-6)
