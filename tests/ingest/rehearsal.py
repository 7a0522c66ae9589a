"""The corpus rehearsal: one small BIDS dataset per pretraining and unseen-device dataset of
``manifests/catalog.toml``, with that dataset's device geometry, channel names as the dataset
spells them, sampling rate and sidecars (1 subject, 5 s; the real CTF file is 2 s).

Geometry sources:

* EEG: no positions in the file where the dataset's catalog fix sets a montage (the fix must
  place them); EEGLAB ``chanlocs`` (MNE's ``biosemi32`` positions) for ds002680, whose
  positions come from its files; 10-05 names otherwise.
* Neuromag VectorView (306 MEG, + 60 EEG for the EMEG set): the real
  ``SSS/sample_audvis_trunc_raw_sss.fif`` sensor table, written as a new FIF at the
  dataset's rate.
* CTF 275: the real ``CTF/testdata_ctf_short_discontinuous.ds`` copied by mne-bids (it holds
  273 of the 275 axial gradiometers, plus 8 EEG electrodes with positions).
* KIT 208/160 and BTi/4D 248: the shared KIT file has only 125 sensors and MNE's testing
  data (with its BTi files) is absent, so these are synthetic helmets (sensors on a
  Fibonacci hemisphere of radius 0.12 m, normals radial) with the vendor's coil type
  (``FIFFV_COIL_KIT_GRAD``, ``FIFFV_COIL_MAGNES_MAG``) written to FIF.

``SPECS`` says, per dataset, what the ingest must keep (channel counts per type).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tests.conftest import meeg_file

DURATION_S = 5.0
_1020_19 = [
    "Fp1",
    "Fp2",
    "F7",
    "F3",
    "Fz",
    "F4",
    "F8",
    "T7",
    "C3",
    "Cz",
    "C4",
    "T8",
    "P7",
    "P3",
    "Pz",
    "P4",
    "P8",
    "O1",
    "O2",
]


@dataclass(frozen=True)
class Spec:
    """How to build one dataset's rehearsal recording, and what the ingest must keep."""

    geometry: str  # eeg | neuromag | emeg | ctf | kit | bti
    fmt: str = "FIF"  # mne-bids format for EEG
    names: tuple[str, ...] = ()  # EEG: channel names as the dataset spells them
    file_positions: bool = False  # EEG: write positions into the file
    n_sensors: int = 0  # kit/bti: helmet size
    expect: dict[str, int] = field(default_factory=dict)  # kept channels per type
    extra_misc: int = 0  # neuromag: misc channels beside MEG (SMN4Lang's 318)
    sfreq: float | None = None  # default: the catalog's


def _montage_names(kind: str) -> list[str]:
    import mne

    return list(mne.channels.make_standard_montage(kind).ch_names)


def _ds_montage(name: str) -> list[str]:
    from brainomni.manifests.catalog import load_datasets

    return [p[0] for p in load_datasets().get(name).fixes.positions]


def specs() -> dict[str, Spec]:
    """Spec per accession (every pretraining and unseen-device dataset of the catalog)."""
    colin1020 = [n for n in _montage_names("colin27_1020") if n not in ("T3", "T4", "T5", "T6")]
    hbn = Spec(
        "eeg", "EEGLAB", tuple([f"E{i}" for i in range(1, 129)] + ["Cz"]), expect={"EEG": 128}
    )
    # actiCHamp 128: the cap's last two positions are the reference (FCz) and ground (Fpz)
    ba128 = tuple(_montage_names("brainproducts-RNP-BA-128")[:128])
    ctf = Spec("ctf", expect={"GRAD": 273, "EEG": 8})
    neuromag = Spec("neuromag", expect={"MAG": 102, "GRAD": 204})
    out = {
        "ds002680": Spec(
            "eeg",
            "EEGLAB",
            tuple(_montage_names("biosemi32")),
            file_positions=True,
            expect={"EEG": 32},
        ),
        "ds002721": Spec(
            "eeg",
            "BrainVision",
            tuple(["FP1", "FP2", *_1020_19[2:]]),
            expect={"EEG": 19},
        ),
        "ds003555": Spec(
            "eeg",
            "EDF",
            tuple([*_1020_19, "T1", "T2", "A1", "A2"]),
            expect={"EEG": 21},
        ),
        "ds003775": Spec("eeg", "BDF", tuple(_montage_names("biosemi64")), expect={"EEG": 64}),
        "ds004148": Spec(
            "eeg",
            "BrainVision",
            tuple([*_ds_montage("ds004148"), "HEOG", "VEOG", "EKG"]),
            expect={"EEG": 60},
        ),
        "ds004186": hbn,
        "ds004357": Spec("eeg", "BrainVision", ba128, expect={"EEG": 128}),
        "ds004796": Spec("eeg", "BrainVision", ba128, expect={"EEG": 128}),
        **{f"ds0055{i:02d}": hbn for i in range(5, 13)},
        "ds005620": Spec(
            "eeg",
            "BrainVision",
            tuple([*colin1020[:62], "EMG", "HEOG", "VEOG"]),
            expect={"EEG": 62},
            sfreq=5000.0,
        ),
        "meg-masc": Spec("kit", n_sensors=208, expect={"GRAD": 208}),
        "meg-narrative": ctf,
        "omega": Spec("ctf", expect={"GRAD": 273}),  # MEG only (exclude = ["EEG*"])
        "camcan": neuromag,
        "ds003682": ctf,
        "ds004107": neuromag,
        "ds004078": Spec("neuromag", extra_misc=2, expect={"MAG": 102, "GRAD": 204}),
        "ds004212": ctf,
        "ds004276": Spec("kit", n_sensors=160, expect={"GRAD": 160}),
        "ds004330": neuromag,
        "ds005241": Spec("kit", n_sensors=208, expect={"GRAD": 208}),
        "kymata-soto": Spec("emeg", expect={"MAG": 102, "GRAD": 204, "EEG": 64}),
        "ds005697": Spec(
            "eeg",
            "EDF",
            tuple([*_ds_montage("ds005697"), "CB1", "CB2", "Trigger"]),
            expect={"EEG": 62},
        ),
        "ds005261": Spec("bti", n_sensors=248, expect={"MAG": 248}),
    }
    return out


# --------------------------------------------------------------------------- raws


def _noise(n_ch: int, n_times: int, scale: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n_ch, n_times)) * scale


def _eeg_raw(spec: Spec, sfreq: float, seed: int) -> Any:
    import mne

    names = list(spec.names)
    types = ["stim" if n == "Trigger" and spec.fmt == "FIF" else "eeg" for n in names]
    info = mne.create_info(names, sfreq, types)
    raw = mne.io.RawArray(_noise(len(names), int(DURATION_S * sfreq), 1e-5, seed), info)
    if spec.file_positions:
        raw.set_montage("biosemi32", verbose="error")
    return raw


def _helmet(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` sensor positions on a Fibonacci upper hemisphere (r 0.12 m) and radial normals."""
    i = np.arange(n) + 0.5
    z = i / n  # upper hemisphere: cos(polar) in (0, 1]
    phi = np.pi * (1 + 5**0.5) * i
    r_xy = np.sqrt(1 - z**2)
    normals = np.stack([r_xy * np.cos(phi), r_xy * np.sin(phi), z], axis=1)
    return normals * 0.12 + np.array([0.0, 0.0, 0.04]), normals


def _helmet_raw(n: int, coil: int, sfreq: float, seed: int) -> Any:
    """A Raw of ``n`` MEG sensors with coil type ``coil`` on a synthetic helmet."""
    import mne
    from mne.io.constants import FIFF

    names = [f"MEG {i:03d}" for i in range(1, n + 1)] + ["STI 014"]
    info = mne.create_info(names, sfreq, ["mag"] * n + ["stim"])
    pos, normals = _helmet(n)
    with info._unlock():
        for ch, p, ez in zip(info["chs"][:n], pos, normals, strict=True):
            ex = np.cross([0.0, 0.0, 1.0], ez)
            ex = ex / np.linalg.norm(ex) if np.linalg.norm(ex) > 1e-9 else np.array([1.0, 0, 0])
            ey = np.cross(ez, ex)
            ch["loc"] = np.concatenate([p, ex, ey, ez])
            ch["coil_type"] = coil
            ch["coord_frame"] = FIFF.FIFFV_COORD_DEVICE
        info["dev_head_t"] = mne.transforms.Transform("meg", "head")
    data = _noise(n + 1, int(DURATION_S * sfreq), 1e-13, seed)
    data[-1] = 0.0
    return mne.io.RawArray(data, info, verbose="error")


def _neuromag_raw(spec: Spec, sfreq: float, seed: int, emeg: bool) -> Any:
    import mne

    src = mne.io.read_raw_fif(meeg_file("SSS/sample_audvis_trunc_raw_sss.fif"), verbose="error")
    keep = mne.pick_types(src.info, meg=True, eeg=emeg, stim=True, eog=True, exclude=[])
    info = mne.pick_info(src.info, keep)
    with info._unlock():
        info["sfreq"] = sfreq
        info["lowpass"] = sfreq / 2
        info["bads"] = []
        info["proj_id"] = None
        info["projs"] = []
    n_times = int(DURATION_S * sfreq)
    scale = np.array(
        [{"grad": 1e-11, "mag": 1e-13, "eeg": 1e-5}.get(t, 0.0) for t in info.get_channel_types()]
    )
    raw = mne.io.RawArray(_noise(len(scale), n_times, 1.0, seed) * scale[:, None], info)
    extra = []
    if emeg:  # Kymata's 64-channel EEG cap: the file's 60 + 4 placed by their 10-05 names
        eeg4 = mne.create_info(["Fpz", "Oz", "T9", "T10"], sfreq, "eeg")
        extra.append(mne.io.RawArray(_noise(4, n_times, 1e-5, seed + 1), eeg4))
    if spec.extra_misc:
        names = [f"MISC{i:03d}" for i in range(spec.extra_misc)]
        misc = mne.create_info(names, sfreq, "misc")
        extra.append(mne.io.RawArray(np.zeros((len(names), n_times)), misc))
    if extra:
        raw.add_channels(extra, force_update_info=True)
    return raw


# --------------------------------------------------------------------------- BIDS


def _write(raw: Any, root: Path, datatype: str, fmt: str, line_freq: float, tmp: Path) -> None:
    import mne
    from mne.io.constants import FIFF
    from mne_bids import BIDSPath, write_raw_bids

    coils = [ch["coil_type"] for ch in raw.info["chs"]]
    if FIFF.FIFFV_COIL_KIT_GRAD in coils:
        # mne-bids takes a KIT coil for a KIT file and looks for its HPI coils: write the
        # sidecars from a magnetometer twin, then the real KIT-coil FIF over its data file.
        twin = raw.copy()
        with twin.info._unlock():
            for ch in twin.info["chs"]:
                if ch["coil_type"] == FIFF.FIFFV_COIL_KIT_GRAD:
                    ch["coil_type"] = FIFF.FIFFV_COIL_POINT_MAGNETOMETER
        _write(twin, root, datatype, fmt, line_freq, tmp)
        (data,) = root.glob(f"sub-*/{datatype}/*_{datatype}.fif")
        raw.info["line_freq"] = line_freq
        raw.save(data, overwrite=True, verbose="error")
        return

    raw.info["line_freq"] = line_freq
    bp = BIDSPath(subject="01", task="rest", datatype=datatype, root=root)
    if fmt == "FIF":  # mne-bids copies MEG files: save first, then read back
        tmp.mkdir(parents=True, exist_ok=True)
        path = tmp / f"{root.name}_raw.fif"
        raw.save(path, overwrite=True, verbose="error")
        raw = mne.io.read_raw_fif(path, verbose="error")
        write_raw_bids(raw, bp, overwrite=True, verbose="error")
    elif fmt == "CTF":
        write_raw_bids(raw, bp, overwrite=True, verbose="error")
    else:
        write_raw_bids(raw, bp, format=fmt, allow_preload=True, overwrite=True, verbose="error")


def _describe(root: Path, accession: str, version: str) -> None:
    from mne_bids import make_dataset_description

    make_dataset_description(
        path=root,
        name=f"rehearsal {accession}",
        dataset_type="raw",
        overwrite=True,
        verbose="error",
    )
    desc = json.loads((root / "dataset_description.json").read_text())
    desc["DatasetVersion"] = version or "0.0.0"
    (root / "dataset_description.json").write_text(json.dumps(desc))


def build(base: Path, datasets: list[Any]) -> dict[str, Path]:
    """Write every dataset's rehearsal BIDS root under ``base``; accession -> root.

    Datasets sharing a spec (the HBN releases, the Neuromag and CTF sets) share one written
    tree, copied.
    """
    import mne
    from mne.io.constants import FIFF

    all_specs = specs()
    built: dict[tuple, Path] = {}
    roots: dict[str, Path] = {}
    for seed, d in enumerate(datasets):
        spec = all_specs[d.accession]
        root = base / d.accession
        sfreq = float(spec.sfreq or d.sfreq or 1000.0)
        key = (spec.geometry, spec.fmt, spec.names, spec.n_sensors, spec.extra_misc)
        key += (sfreq,) if spec.geometry != "ctf" else ()  # the real CTF file is 1200 Hz
        if key in built:
            shutil.copytree(built[key], root)
        else:
            if spec.geometry == "eeg":
                raw, datatype, fmt = _eeg_raw(spec, sfreq, seed), "eeg", spec.fmt
            elif spec.geometry in ("neuromag", "emeg"):
                raw = _neuromag_raw(spec, sfreq, seed, spec.geometry == "emeg")
                datatype, fmt = "meg", "FIF"
            elif spec.geometry == "ctf":
                path = meeg_file("CTF/testdata_ctf_short_discontinuous.ds")
                raw, datatype, fmt = mne.io.read_raw_ctf(path, verbose="error"), "meg", "CTF"
            else:
                coil = FIFF.FIFFV_COIL_KIT_GRAD if spec.geometry == "kit" else None
                coil = coil or FIFF.FIFFV_COIL_MAGNES_MAG
                raw = _helmet_raw(spec.n_sensors, coil, sfreq, seed)
                datatype, fmt = "meg", "FIF"
            _write(raw, root, datatype, fmt, 50.0, base / "_tmp")
            built[key] = root
        _describe(root, d.accession, d.version)
        roots[d.accession] = root
    shutil.rmtree(base / "_tmp", ignore_errors=True)
    return roots
