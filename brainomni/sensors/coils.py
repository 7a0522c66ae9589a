"""MEG coil types: what every coil MNE defines becomes in the sensor table.

MNE stores a channel's coil as ``ch["coil_type"]``, a FIFF constant (``FIFFV_COIL_*``). For
CTF data the upper 16 bits carry the synthetic-gradiometer compensation grade of the stored
data (``201609 = 5001 | 3 << 16``: a CTF axial gradiometer, 3rd-order compensated), so the
coil is always decided from the **base coil**, the lower 16 bits (:func:`base_coil`), and the
grade is reported separately (:func:`meg_compensation_grade`); the data are kept as stored.

:data:`COIL_KINDS` types every ``FIFFV_COIL_*`` constant of ``mne.io.constants.FIFF`` by name,
deliberately (a test fails when MNE adds a coil this table does not know, and checks the
classes against the coil definitions in ``mne/data/coil_def.dat``):

- ``planar``: planar gradiometer, type GRAD, orientation the gradient direction ``loc[3:6]``;
- ``axial``: axial gradiometer, type GRAD, orientation the coil normal ``loc[9:12]``;
- ``magnetometer``: type MAG (SQUID and OPM magnetometers alike), orientation the coil
  normal / OPM sensing direction ``loc[9:12]``;
- ``reference``: MEG reference sensor (noise compensation, far from the head), dropped;
- ``not_meg``: EEG, fNIRS, eye tracking, MCG, dipoles and the empty coil; the channel is not
  typed from its coil (EEG is handled by the EEG rules, the rest dropped).

The README table "MEG coil types" is :func:`coil_table_markdown`; a test keeps them equal.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from mne import Info

PLANAR, AXIAL, MAGNETOMETER, REFERENCE, NOT_MEG = (
    "planar",
    "axial",
    "magnetometer",
    "reference",
    "not_meg",
)
# what each class becomes in the sensor table, and where its orientation comes from
BECOMES = MappingProxyType(
    {
        PLANAR: ("GRAD", "loc[3:6] (gradient direction)"),
        AXIAL: ("GRAD", "loc[9:12] (coil normal)"),
        MAGNETOMETER: ("MAG", "loc[9:12] (coil normal / sensing direction)"),
        REFERENCE: ("dropped: MEG reference sensor", "-"),
        NOT_MEG: ("not a MEG coil", "-"),
    }
)

COMP_GRADE_SHIFT = 16  # MNE: coil_type = base coil | (grade << 16)
_BASE_MASK = (1 << COMP_GRADE_SHIFT) - 1

# FIFF constant name (without FIFFV_COIL_) -> (class, device / note). Aliases sharing one
# value (MAGNES_REF_MAG / MAGNES_R_MAG...) are listed under each name.
COIL_KINDS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "NONE": (NOT_MEG, "no coil (stim, misc, ...)"),
        "EEG": (NOT_MEG, "EEG electrode"),
        "EEG_BIPOLAR": (NOT_MEG, "bipolar EEG derivation"),
        "EEG_CSD": (NOT_MEG, "EEG current source density"),
        "NM_122": (PLANAR, "Neuromag-122 planar gradiometer"),
        "NM_24": (PLANAR, "Neuromag-24 planar gradiometer"),
        "NM_MCG_AXIAL": (NOT_MEG, "Neuromag MCG axial gradiometer (heart, not brain)"),
        "MCG_42": (NOT_MEG, "MCG 42-channel (heart, not brain)"),
        "DIPOLE": (NOT_MEG, "current dipole (a source, not a sensor)"),
        "FNIRS_HBO": (NOT_MEG, "fNIRS"),
        "FNIRS_HBR": (NOT_MEG, "fNIRS"),
        "FNIRS_CW_AMPLITUDE": (NOT_MEG, "fNIRS"),
        "FNIRS_RAW": (NOT_MEG, "fNIRS"),
        "FNIRS_OD": (NOT_MEG, "fNIRS"),
        "FNIRS_FD_AC_AMPLITUDE": (NOT_MEG, "fNIRS"),
        "FNIRS_FD_PHASE": (NOT_MEG, "fNIRS"),
        "FNIRS_TD_GATED_AMPLITUDE": (NOT_MEG, "fNIRS"),
        "FNIRS_TD_MOMENTS_INTENSITY": (NOT_MEG, "fNIRS"),
        "FNIRS_TD_MOMENTS_MEAN": (NOT_MEG, "fNIRS"),
        "FNIRS_TD_MOMENTS_VARIANCE": (NOT_MEG, "fNIRS"),
        "EYETRACK_POS": (NOT_MEG, "eye tracker"),
        "EYETRACK_PUPIL": (NOT_MEG, "eye tracker"),
        "POINT_MAGNETOMETER": (MAGNETOMETER, "point magnetometer (simulated / generic OPM)"),
        "AXIAL_GRAD_5CM": (AXIAL, "generic axial gradiometer, 5 cm baseline"),
        "VV_PLANAR_W": (PLANAR, "VectorView planar gradiometer"),
        "VV_PLANAR_T1": (PLANAR, "VectorView planar gradiometer"),
        "VV_PLANAR_T2": (PLANAR, "VectorView planar gradiometer"),
        "VV_PLANAR_T3": (PLANAR, "VectorView planar gradiometer"),
        "VV_PLANAR_T4": (PLANAR, "VectorView planar gradiometer (MEG-MRI)"),
        "VV_MAG_W": (MAGNETOMETER, "VectorView magnetometer"),
        "VV_MAG_T1": (MAGNETOMETER, "VectorView magnetometer"),
        "VV_MAG_T2": (MAGNETOMETER, "VectorView magnetometer"),
        "VV_MAG_T3": (MAGNETOMETER, "VectorView/TRIUX magnetometer"),
        "VV_MAG_T4": (MAGNETOMETER, "VectorView magnetometer (MEG-MRI)"),
        "MAGNES_MAG": (MAGNETOMETER, "BTi/4D Magnes magnetometer"),
        "MAGNES_GRAD": (AXIAL, "BTi/4D Magnes axial gradiometer"),
        "MAGNES_REF_MAG": (REFERENCE, "BTi/4D reference magnetometer"),
        "MAGNES_R_MAG": (REFERENCE, "BTi/4D reference magnetometer"),
        "MAGNES_REF_GRAD": (REFERENCE, "BTi/4D reference gradiometer"),
        "MAGNES_R_GRAD": (REFERENCE, "BTi/4D reference gradiometer"),
        "MAGNES_OFFDIAG_REF_GRAD": (REFERENCE, "BTi/4D off-diagonal reference gradiometer"),
        "MAGNES_R_GRAD_OFF": (REFERENCE, "BTi/4D off-diagonal reference gradiometer"),
        "CTF_GRAD": (AXIAL, "CTF axial gradiometer (any compensation grade)"),
        "CTF_REF_MAG": (REFERENCE, "CTF reference magnetometer"),
        "CTF_REF_GRAD": (REFERENCE, "CTF reference gradiometer"),
        "CTF_OFFDIAG_REF_GRAD": (REFERENCE, "CTF off-diagonal reference gradiometer"),
        "KIT_GRAD": (AXIAL, "KIT/Yokogawa/Ricoh axial gradiometer"),
        "KIT_REF_MAG": (REFERENCE, "KIT reference magnetometer"),
        "BABY_GRAD": (AXIAL, "BabySQUID axial gradiometer"),
        "BABY_MAG": (MAGNETOMETER, "BabyMEG magnetometer"),
        "BABY_REF_MAG": (REFERENCE, "BabyMEG compensation magnetometer"),
        "BABY_REF_MAG2": (REFERENCE, "BabyMEG reference magnetometer"),
        "ARTEMIS123_GRAD": (AXIAL, "ARTEMIS123 axial gradiometer"),
        "ARTEMIS123_REF_MAG": (REFERENCE, "ARTEMIS123 reference magnetometer"),
        "ARTEMIS123_REF_GRAD": (REFERENCE, "ARTEMIS123 reference gradiometer"),
        "QUSPIN_ZFOPM_MAG": (MAGNETOMETER, "QuSpin OPM Gen1"),
        "QUSPIN_ZFOPM_MAG2": (MAGNETOMETER, "QuSpin OPM Gen2 (also FIL/Cerca OPM systems)"),
        "FIELDLINE_OPM_MAG_GEN1": (MAGNETOMETER, "FieldLine OPM Gen1"),
        "KERNEL_OPM_MAG_GEN1": (MAGNETOMETER, "Kernel OPM Gen1"),
        "KRISS_GRAD": (AXIAL, "KRISS axial gradiometer"),
        "COMPUMEDICS_ADULT_GRAD": (AXIAL, "Compumedics (Orion) adult axial gradiometer"),
        "COMPUMEDICS_PEDIATRIC_GRAD": (AXIAL, "Compumedics pediatric axial gradiometer"),
    }
)


def base_coil(coil_type: int) -> int:
    """The coil without the CTF compensation grade MNE keeps in the upper 16 bits."""
    return int(coil_type) & _BASE_MASK


def compensation_grade(coil_type: int) -> int:
    """The CTF compensation grade stored in ``coil_type`` (0 for uncompensated / non-CTF)."""
    return int(coil_type) >> COMP_GRADE_SHIFT


@functools.lru_cache(maxsize=1)
def _by_value() -> dict[int, str]:
    """FIFF coil value -> class, from :data:`COIL_KINDS` and MNE's constants."""
    from mne.io.constants import FIFF

    out: dict[int, str] = {}
    for name, (cls, _) in COIL_KINDS.items():
        value = FIFF.get(f"FIFFV_COIL_{name}")
        if value is not None:
            out[int(value)] = cls
    return out


@functools.lru_cache(maxsize=256)
def coil_class(coil_type: int) -> str | None:
    """``"planar"``, ``"axial"``, ``"magnetometer"`` or ``"reference"`` for a MEG coil, and
    ``None`` for anything else (EEG, fNIRS, unknown coils), decided from the base coil (the
    compensation grade in the upper bits is ignored)."""
    cls = _by_value().get(base_coil(coil_type))
    return None if cls in (None, NOT_MEG) else cls


def meg_compensation_grade(info: Info) -> int | None:
    """The compensation grade of the MEG channels as stored (0 = none; CTF 1, 2, 3), or
    ``None`` when ``info`` has no MEG channel. Mixed grades (which MNE itself refuses to
    process) give the highest one."""
    from mne.io.constants import FIFF

    grades = {
        compensation_grade(ch["coil_type"])
        for ch in info["chs"]
        if int(ch["kind"]) == FIFF.FIFFV_MEG_CH
    }
    return max(grades) if grades else None


def coil_table_rows(names: Iterable[str] | None = None) -> list[tuple[str, int, str, str, str]]:
    """(constant, value, class, becomes, orientation + device) per coil, by value then name."""
    from mne.io.constants import FIFF

    rows = []
    for name in names if names is not None else COIL_KINDS:
        cls, note = COIL_KINDS[name]
        becomes, ori = BECOMES[cls]
        value = int(FIFF[f"FIFFV_COIL_{name}"])
        rows.append((f"FIFFV_COIL_{name}", value, becomes, ori, note))
    return sorted(rows, key=lambda r: (r[1], r[0]))


def coil_table_markdown() -> str:
    """The README's "MEG coil types" table, generated from :data:`COIL_KINDS`."""
    lines = [
        "| FIFF coil constant | value | becomes | orientation | device |",
        "|---|---|---|---|---|",
    ]
    for const, value, becomes, ori, note in coil_table_rows():
        lines.append(f"| `{const}` | {value} | {becomes} | {ori} | {note} |")
    return "\n".join(lines)
