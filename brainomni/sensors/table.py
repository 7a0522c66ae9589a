"""The sensor table of one recording: which channels are kept, their type (EEG 0, MAG 1,
GRAD 2), position and orientation, and why every other channel was dropped.

MEG sensor types come from the coil type (:mod:`brainomni.sensors.coils`: every MNE coil typed
deliberately, from the base coil without the CTF compensation grade), not MNE's channel type: axial gradiometers
(CTF, KIT/Yokogawa/Ricoh, ARTEMIS123, BTi/4D MAGNES gradiometers...) carry MNE type ``mag`` but
are GRAD; Neuromag planar gradiometers (VectorView, Neuromag-122) are GRAD; Neuromag, BTi/4D,
BabyMEG and OPM magnetometers are MAG. Orientation is the coil normal ``loc[9:12]`` for
magnetometers and axial gradiometers and the gradient direction ``loc[3:6]`` for planar
gradiometers (spec §2 step 4), scaled to unit length; EEG orientation is zero.

EEG positions, first that exists: the file (finite, non-zero ``loc[0:3]``), then BIDS
``electrodes.tsv`` (``electrodes``), then the standard 10-05 montage by name
(:mod:`brainomni.sensors.names`). Positions are metres, in the frame the source gives them.

Minimum channels: a modality group (EEG; MEG = MAG and GRAD) with fewer than
``min_channels`` placed channels (default 2) is dropped, because per-group position
normalisation and per-type common-average referencing are degenerate for one channel (a
centred single position is zero and the official scaling divides by it). A recording with no
group left is a :class:`~brainomni.errors.SkipRecording`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from brainomni.errors import RecordingFailed, SkipRecording
from brainomni.records import EEG, GRAD, MAG, SENSOR_TYPE_NAMES, Dropped, SensorTable
from brainomni.sensors.coils import MAGNETOMETER, PLANAR, REFERENCE, base_coil, coil_class
from brainomni.sensors.names import MONTAGE, match_montage, non_eeg_kind, resolve_names

if TYPE_CHECKING:  # pragma: no cover
    from mne import Info

logger = logging.getLogger(__name__)

POS_FILE, POS_ELECTRODES = "file", "electrodes.tsv"
POS_MONTAGE = f"montage:{MONTAGE}"
# MNE places 2-D layout positions (Neuroscan CNT's setup) on a sphere of radius 1 m
# (mne.channels.layout._topo_to_sphere); they are scaled to MNE's default head radius.
HEAD_RADIUS_M = 0.095  # mne.defaults.HEAD_SIZE_DEFAULT
POS_FILE_UNIT_SPHERE = f"file:unit-sphere*{HEAD_RADIUS_M}"
DEFAULT_MIN_CHANNELS = 2
# A plausible head (check_geometry): every sensor within this distance of its group's median
# position (an adult head is ~0.1 m in radius, a MEG helmet ~0.12 m), and a group of two or
# more sensors spread over at least MIN_SPREAD_M.
MAX_HEAD_RADIUS_M = 0.3
MIN_SPREAD_M = 1e-3

# BIDS channels.tsv "type" -> our category ("meg" trusts the coil type).
_BIDS_TYPES = {
    "EEG": "eeg",
    "MEGMAG": "meg",
    "MEGGRADAXIAL": "meg",
    "MEGGRADPLANAR": "meg",
    "MEGOTHER": "meg",
    "MEGREFMAG": "ref_meg",
    "MEGREFGRADAXIAL": "ref_meg",
    "MEGREFGRADPLANAR": "ref_meg",
    "EOG": "eog",
    "HEOG": "eog",
    "VEOG": "eog",
    "ECG": "ecg",
    "EMG": "emg",
    "TRIG": "stim",
    "REF": "reference electrode",
    "SEEG": "seeg",
    "ECOG": "ecog",
    "DBS": "dbs",
    "RESP": "resp",
}


def _finite_nonzero(xyz: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(xyz)) and np.any(xyz != 0.0))


def _ci_get(mapping: Mapping[str, Any] | None, name: str) -> Any:
    """Exact, then case-insensitive lookup."""
    if not mapping:
        return None
    if name in mapping:
        return mapping[name]
    low = {k.lower(): v for k, v in mapping.items()}
    return low.get(name.lower())


def _meg_row(ch: Mapping[str, Any]) -> tuple[int, np.ndarray, np.ndarray] | str:
    """(type id, pos, unit ori) for a MEG channel, or the reason it is dropped."""
    cls = coil_class(int(ch["coil_type"]))  # from the base coil: CTF grades are ignored
    if cls is None:
        return f"unsupported MEG coil type {base_coil(ch['coil_type'])} (stored {ch['coil_type']})"
    if cls == REFERENCE:
        return "MEG reference sensor"
    loc = np.asarray(ch["loc"], dtype=np.float64)
    pos = loc[0:3]
    ori = loc[3:6] if cls == PLANAR else loc[9:12]
    if not _finite_nonzero(pos):
        return "MEG sensor without a position in the file"
    norm = float(np.linalg.norm(ori)) if np.all(np.isfinite(ori)) else 0.0
    if norm < 1e-6:
        return "MEG sensor without an orientation in the file"
    return (MAG if cls == MAGNETOMETER else GRAD), pos, ori / norm


def build_sensor_table(
    info: Info,
    *,
    channel_types: Mapping[str, str] | None = None,
    electrodes: Mapping[str, Sequence[float]] | None = None,
    exclude: Iterable[str] = (),
    min_channels: int = DEFAULT_MIN_CHANNELS,
) -> SensorTable:
    """Sensor table of the channels in ``info`` (an ``mne.Info``).

    ``channel_types``: BIDS ``channels.tsv`` name -> TYPE (``EEG``, ``EOG``, ``MEGMAG``...),
    overriding the file's types (MEG channels still take their sensor type from the coil).
    ``electrodes``: BIDS ``electrodes.tsv`` name -> (x, y, z) in metres. ``exclude``: names to
    drop (per-dataset exclusions). Channels marked bad are kept (the cleaning chain
    interpolates them). Raises :class:`SkipRecording` when no group keeps ``min_channels``.
    """
    if min_channels < 1:
        raise ValueError(f"min_channels must be >= 1, got {min_channels}")
    excluded = set(exclude)
    kinds = info.get_channel_types()
    rows: dict[int, tuple[int, np.ndarray, np.ndarray, str]] = {}
    dropped: dict[int, str] = {}
    need_montage: list[int] = []
    for idx, (ch, kind) in enumerate(zip(info["chs"], kinds, strict=True)):
        name = ch["ch_name"]
        if name in excluded:
            dropped[idx] = "excluded by configuration"
            continue
        bids = _ci_get(channel_types, name)
        category = _BIDS_TYPES.get(str(bids).upper(), "misc") if bids is not None else None
        if kind in ("mag", "grad") and category in (None, "meg"):
            row = _meg_row(ch)
            if isinstance(row, str):
                dropped[idx] = row
            else:
                rows[idx] = (*row, POS_FILE)
            continue
        if category == "meg":
            dropped[idx] = f"channels.tsv says {bids} but the file has no MEG coil here"
            continue
        if category is not None and category != "eeg":
            dropped[idx] = f"{category} channel (channels.tsv type {bids})"
            continue
        if category is None and kind != "eeg":
            dropped[idx] = "MEG reference sensor" if kind == "ref_meg" else f"{kind} channel"
            continue
        if category is None and (guess := non_eeg_kind(name)) is not None:
            dropped[idx] = f"{guess} channel (by its name)"
            continue
        loc = np.asarray(ch["loc"][:3], dtype=np.float64)
        tsv = _ci_get(electrodes, name)
        tsv_xyz = np.asarray(tsv, dtype=np.float64) if tsv is not None else None
        if _finite_nonzero(loc):
            rows[idx] = (EEG, loc, np.zeros(3), POS_FILE)
        elif tsv_xyz is not None and tsv_xyz.shape == (3,) and _finite_nonzero(tsv_xyz):
            rows[idx] = (EEG, tsv_xyz, np.zeros(3), POS_ELECTRODES)
        else:
            need_montage.append(idx)

    if need_montage:
        names = [info["chs"][i]["ch_name"] for i in need_montage]
        matched, unmatched = resolve_names(names)
        positions = match_montage(list(matched))
        for idx, name in zip(need_montage, names, strict=True):
            if name in matched:
                rows[idx] = (EEG, positions[name][1], np.zeros(3), POS_MONTAGE)
            else:
                dropped[idx] = f"EEG channel without a position ({unmatched[name]})"

    _enforce_minimum(info, rows, dropped, min_channels)
    _scale_unit_sphere(rows)
    check_geometry(info, rows)
    if not rows:
        counts = Counter(r.split(" (")[0] for r in dropped.values())
        top = ", ".join(f"{n} {r}" for r, n in counts.most_common(4))
        raise SkipRecording(
            f"no placeable EEG/MEG channels (min_channels={min_channels}): "
            f"{len(dropped)} dropped ({top})"
        )
    return _assemble(info, rows, dropped)


def check_geometry(info: Info, rows: Mapping[int, tuple]) -> None:
    """Raise :class:`RecordingFailed` (``ImplausibleGeometry``) unless the kept sensors'
    positions look like a head, per modality group (EEG; MEG = MAG + GRAD): all finite and
    representable in float32, all within :data:`MAX_HEAD_RADIUS_M` of the group's median
    position (the median, not the mean, so one absurd row cannot move the centre), and not
    all coincident (spread under :data:`MIN_SPREAD_M`). The reason names the offending
    channels and where their positions came from (file, electrodes.tsv, template).

    Wrong units are the usual cause: millimetre values read as metres put electrodes
    ~85 m from the head centre.
    """
    for group, members in (("EEG", (EEG,)), ("MEG", (MAG, GRAD))):
        idx = sorted(i for i, r in rows.items() if r[0] in members)
        if idx:
            _check_group(
                group,
                [str(info["chs"][i]["ch_name"]) for i in idx],
                np.array([rows[i][1] for i in idx], dtype=np.float64).reshape(-1, 3),
                [str(rows[i][3]) for i in idx],
            )


def _check_group(group: str, names: list[str], pos: np.ndarray, sources: list[str]) -> None:
    def fail(bad: np.ndarray, what: str) -> None:
        listed = ", ".join(f"{names[k]} ({sources[k]}: {_fmt_xyz(pos[k])})" for k in bad[:5])
        more = f" and {bad.size - 5} more" if bad.size > 5 else ""
        raise RecordingFailed(
            f"implausible {group} sensor positions: {what}: {listed}{more}. Check the "
            "position units (EEGCoordinateUnits in coordsystem.json) and values",
            error_class="ImplausibleGeometry",
        )

    f32_max = float(np.finfo(np.float32).max)
    finite = np.all(np.isfinite(pos), axis=1) & np.all(np.abs(pos) < f32_max, axis=1)
    if not finite.all():
        fail(np.flatnonzero(~finite), "not finite in float32")
    centre = np.median(pos, axis=0)
    dist = np.linalg.norm(pos - centre, axis=1)
    far = np.flatnonzero(dist > MAX_HEAD_RADIUS_M)
    if far.size:
        fail(
            far[np.argsort(-dist[far], kind="stable")],
            f"{far.size} of {len(names)} more than {MAX_HEAD_RADIUS_M} m from the median "
            f"position (up to {float(dist.max()):.3g} m)",
        )
    if len(names) >= 2 and float(dist.max()) < MIN_SPREAD_M:
        fail(np.arange(len(names)), f"all {len(names)} within {MIN_SPREAD_M * 1e3:g} mm")


def _scale_unit_sphere(rows: dict[int, tuple]) -> None:
    """EEG positions of one source (the file, or BIDS ``electrodes.tsv``) that all lie on the
    unit sphere (|p| = 1 +- 1%, at least 3 of them) are scaled to :data:`HEAD_RADIUS_M`;
    their ``pos_source`` says so (``file:unit-sphere*0.095``). That is MNE's projection of a
    2-D layout with no head size (Neuroscan CNT), also as mne-bids writes it into an
    ``electrodes.tsv`` declared in metres. Anything else is left to :func:`check_geometry`."""
    for source in (POS_FILE, POS_ELECTRODES):
        idx = [i for i, r in rows.items() if r[0] == EEG and r[3] == source]
        if len(idx) < 3:
            continue
        norms = np.linalg.norm(np.array([rows[i][1] for i in idx], dtype=np.float64), axis=1)
        if np.all(np.abs(norms - 1.0) < 0.01):
            label = f"{source}:unit-sphere*{HEAD_RADIUS_M}"
            for i in idx:
                t, pos, ori, _ = rows[i]
                rows[i] = (t, np.asarray(pos, dtype=np.float64) * HEAD_RADIUS_M, ori, label)
            logger.info(
                "EEG positions (%s) on the unit sphere scaled to a %g m head", source, HEAD_RADIUS_M
            )


def _fmt_xyz(xyz: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:.3g}" for v in xyz) + ") m"


def _enforce_minimum(
    info: Info, rows: dict[int, tuple], dropped: dict[int, str], min_channels: int
) -> None:
    """Drop a modality group (EEG; MEG) that has fewer than ``min_channels`` channels."""
    for group, members in (("EEG", (EEG,)), ("MEG", (MAG, GRAD))):
        idx = [i for i, r in rows.items() if r[0] in members]
        if 0 < len(idx) < min_channels:
            for i in idx:
                del rows[i]
                dropped[i] = (
                    f"only {len(idx)} placed {group} channel(s); min_channels={min_channels} "
                    "are needed per group"
                )
            logger.debug("dropping %s group of %d channel(s)", group, len(idx))


def _assemble(info: Info, rows: dict[int, tuple], dropped: dict[int, str]) -> SensorTable:
    picks = np.array(sorted(rows), dtype=np.int64)
    types = np.array([rows[i][0] for i in picks], dtype=np.int8)
    pos = np.array([rows[i][1] for i in picks], dtype=np.float32).reshape(-1, 3)
    ori = np.array([rows[i][2] for i in picks], dtype=np.float32).reshape(-1, 3)
    if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(ori))):  # check_geometry ran
        raise RecordingFailed(
            "sensor table built non-finite positions or orientations",
            error_class="ImplausibleGeometry",
        )
    return SensorTable(
        names=[info["chs"][i]["ch_name"] for i in picks],
        types=types,
        pos=pos,
        ori=ori,
        pos_source=[rows[i][3] for i in picks],
        picks=picks,
        dropped=[Dropped(info["chs"][i]["ch_name"], r) for i, r in sorted(dropped.items())],
    )


def sensor_table_json(table: SensorTable) -> dict[str, Any]:
    """JSON-ready description: counts per type, one row per kept channel, dropped channels."""
    return {
        "n_channels": len(table),
        "summary": table.summary(),
        "pos_sources": dict(Counter(table.pos_source)),
        "channels": table.as_rows(),
        "dropped": [{"name": d.name, "reason": d.reason} for d in table.dropped],
        "type_names": {str(k): v for k, v in SENSOR_TYPE_NAMES.items()},
    }
