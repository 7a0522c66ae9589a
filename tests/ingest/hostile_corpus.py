"""A BIDS EEG dataset of 30 tiny recordings, most with hostile sidecars or data files
(issue #15): non-UTF-8 bytes, binary and invalid JSON sidecars, absurd electrode
coordinates, unknown units, zero-byte/truncated/corrupt data files. ``sub-01`` is written by
mne-bids from the real ``BDF/test_bdf_stim_channel.bdf`` (3 EEG channels, 10 s); every
other subject is a copy of it with one thing broken.

``build_hostile(root)`` returns ``{relpath: (outcome, error_class or check)}``: for ``ok``
rows the second item names what the QC must show (``"electrodes"``, ``"mixed"``,
``"template"``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.conftest import meeg_file

CHANNELS = ("C3", "C4", "Cz")
SPACE = "space-CapTrak"


def _standard_mm() -> dict[str, list[float]]:
    """Plausible head positions (mm, head frame) of the three channels."""
    return {"C3": [-63.0, -10.0, 62.0], "C4": [63.0, -10.0, 62.0], "Cz": [0.0, -9.0, 88.0]}


def _electrodes_tsv(rows: list[tuple[str, ...]]) -> bytes:
    lines = ["name\tx\ty\tz\timpedance"] + ["\t".join(map(str, r)) + "\tn/a" for r in rows]
    return ("\n".join(lines) + "\n").encode()


def _coordsystem(units: object) -> bytes:
    return json.dumps({"EEGCoordinateSystem": "CapTrak", "EEGCoordinateUnits": units}).encode()


def build_hostile(root: Path) -> dict[str, tuple[str, str]]:
    import mne
    import numpy as np
    from mne_bids import BIDSPath, write_raw_bids

    raw = mne.io.read_raw(meeg_file("BDF/test_bdf_stim_channel.bdf"), verbose="error")
    raw.info["line_freq"] = 50.0
    bp = BIDSPath(subject="01", task="rest", datatype="eeg", root=root)
    write_raw_bids(raw, bp, overwrite=True, verbose="error")
    src = root / "sub-01" / "eeg"
    bdf = (src / "sub-01_task-rest_eeg.bdf").read_bytes()
    mm = _standard_mm()
    good = [(n, *mm[n]) for n in CHANNELS]
    expected: dict[str, tuple[str, str]] = {}

    def subject(sub: str, outcome: str, what: str, **files: bytes) -> None:
        """Copy sub-01 to sub-<sub>; ``files`` (BIDS suffix -> bytes) replace or add files
        (``bdf``, ``eeg_json``, ``channels``, ``electrodes``, ``coordsystem``)."""
        d = root / f"sub-{sub}" / "eeg"
        d.mkdir(parents=True, exist_ok=True)
        for f in src.iterdir():
            shutil.copyfile(f, d / f.name.replace("sub-01", f"sub-{sub}"))
        names = {
            "bdf": f"sub-{sub}_task-rest_eeg.bdf",
            "eeg_json": f"sub-{sub}_task-rest_eeg.json",
            "channels": f"sub-{sub}_task-rest_channels.tsv",
            "electrodes": f"sub-{sub}_{SPACE}_electrodes.tsv",
            "coordsystem": f"sub-{sub}_{SPACE}_coordsystem.json",
        }
        if "electrodes" in files and "coordsystem" not in files:
            files["coordsystem"] = _coordsystem("mm")
        for key, data in files.items():
            (d / names[key]).write_bytes(data)
        expected[f"sub-{sub}/eeg/{names['bdf']}"] = (outcome, what)

    chan = (src / "sub-01_task-rest_channels.tsv").read_bytes()
    side = (src / "sub-01_task-rest_eeg.json").read_bytes()
    expected["sub-01/eeg/sub-01_task-rest_eeg.bdf"] = ("ok", "template")
    # ---- usable (ok)
    subject("02", "ok", "electrodes", electrodes=_electrodes_tsv(good))
    subject("03", "ok", "template", channels=chan.replace(b"Trigger", b"Trigger \xff\xfe"))
    mixed = _electrodes_tsv([*good[:2], ("Cz", "n/a", "n/a", "n/a")])
    subject("04", "ok", "mixed", electrodes=mixed.replace(b"impedance", b"imp\xe9dance"))
    subject(
        "05", "ok", "electrodes", electrodes=_electrodes_tsv(good), coordsystem=_coordsystem("MM")
    )
    subject(
        "06", "ok", "template", electrodes=_electrodes_tsv(good), coordsystem=_coordsystem("n/a")
    )
    subject("07", "ok", "template", electrodes=b"")
    cm = [(n, *(v / 10 for v in mm[n])) for n in CHANNELS]
    subject(
        "08", "ok", "electrodes", electrodes=_electrodes_tsv(cm), coordsystem=_coordsystem("cm")
    )
    renamed = _electrodes_tsv(good).replace(b"C3\t", b"C\xff3\t")  # C3 unmatched: template
    subject("09", "ok", "mixed", electrodes=renamed)
    subject(
        "10",
        "ok",
        "template",
        eeg_json=side.replace(b'"TaskName"', b'"Note": "\xe9t\xe9", "TaskName"'),
    )
    # ---- geometry and units
    subject(
        "11",
        "failed",
        "ImplausibleGeometry",
        electrodes=_electrodes_tsv([*good[:2], ("Cz", "1e308", 0, 0)]),
        coordsystem=_coordsystem("m"),
    )
    subject(
        "12",
        "failed",
        "ImplausibleGeometry",
        electrodes=_electrodes_tsv(good),
        coordsystem=_coordsystem("m"),
    )
    subject(
        "13",
        "failed",
        "BadCoordinateUnits",
        electrodes=_electrodes_tsv(good),
        coordsystem=_coordsystem("furlongs"),
    )
    subject(
        "14",
        "failed",
        "BadSidecarJSON",
        electrodes=_electrodes_tsv(good),
        coordsystem=b"EEGCoordinateUnits: mm",
    )
    subject("15", "failed", "BadSidecarJSON", electrodes=_electrodes_tsv(good), coordsystem=b"")
    subject(
        "16",
        "failed",
        "BadElectrodes",
        electrodes=_electrodes_tsv([*good[:2], ("Cz", "abc", 0, 0)]),
    )
    subject(
        "17",
        "failed",
        "BadElectrodes",
        electrodes=_electrodes_tsv([*good[:2], ("Cz", "1e400", 0, 0)]),
    )
    subject(
        "18",
        "failed",
        "ImplausibleGeometry",
        electrodes=_electrodes_tsv([(n, 10, 10, 10) for n in CHANNELS]),
    )
    subject("19", "failed", "BadElectrodes", electrodes=b"label\tpos\nC3\t1\n")
    subject(
        "20",
        "failed",
        "SidecarDecodeError",
        electrodes=np.random.default_rng(1).bytes(512) + b"\x00",
    )
    subject(
        "21",
        "failed",
        "BadElectrodes",
        electrodes=_electrodes_tsv([*good[:2], ("Cz", "n/a", 1, 2)]),
    )
    subject(
        "22",
        "failed",
        "ImplausibleGeometry",
        electrodes=_electrodes_tsv([*good[:2], ("Cz", "-1e308", 0, 0)]),
    )
    # ---- sidecars the crawl reads
    subject("23", "failed", "BadSidecarJSON", eeg_json=side[: len(side) // 2])
    subject("24", "failed", "BadSidecarJSON", eeg_json=b"[" * 100_000)
    subject("25", "failed", "BadSidecarJSON", eeg_json=b"[1, 2, 3]")
    subject("26", "failed", "SidecarDecodeError", channels=b"name\x00type\nC3\x00EEG\n")
    # ---- data files
    subject("27", "failed", "EmptyFile", bdf=b"")
    subject("28", "failed", "", bdf=bdf[: len(bdf) // 3])  # truncated: a reader error class
    subject("29", "failed", "", bdf=np.random.default_rng(2).bytes(4096))
    n_records = int(bdf[236:244].decode().strip())
    subject("30", "failed", "", bdf=bdf[:236] + f"{n_records * 4:<8d}".encode() + bdf[244:])
    # dataset-level: a participants.tsv with Latin-1 bytes must not stop anything
    with (root / "participants.tsv").open("ab") as fh:
        fh.write(b"sub-02\tn/a\tn/a\tn/a\t\xff\n")
    return expected
