"""A labelled set in one ``.npz`` file (no pickle), for ``brainomni finetune --set FILE``.

Arrays: ``signal`` (sum C_i, T) float32 / float16, ``sensors`` (sum C_i, 6), ``sensor_type``
(sum C_i,), ``channels`` (N,) channel count per window, ``label``, ``subject``,
``recording_id``, ``onset_s`` (N,), ``classes`` and ``name``; ``meta`` as a JSON string.
Every size is checked before anything is built.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .data import LabelledSet, Window

FORMAT = "brainomni.labelled-set/1"


def save_set(windows: LabelledSet, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ws = windows.windows
    np.savez(
        path,
        format=np.asarray(FORMAT),
        signal=np.concatenate([w.signal for w in ws]),
        sensors=np.concatenate([w.sensors for w in ws]).astype(np.float32),
        sensor_type=np.concatenate([w.sensor_type for w in ws]).astype(np.int8),
        channels=np.asarray([w.signal.shape[0] for w in ws], np.int64),
        label=windows.labels,
        subject=np.asarray([w.subject for w in ws], dtype=str),
        recording_id=np.asarray([w.recording_id for w in ws], dtype=str),
        onset_s=np.asarray([w.onset_s for w in ws], np.float64),
        classes=np.asarray(windows.classes, dtype=str),
        name=np.asarray(windows.name),
        meta=np.asarray(json.dumps(windows.meta, sort_keys=True, default=str)),
    )
    return path


def load_set(path: str | Path) -> LabelledSet:
    """Read a file written by :func:`save_set`; ``ValueError`` naming the file when it is not
    one or its arrays disagree."""
    path = Path(path)
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"{path}: not a labelled-set .npz ({exc}); write one with save_set"
        ) from exc
    with z:
        need = {
            "format",
            "signal",
            "sensors",
            "sensor_type",
            "channels",
            "label",
            "subject",
            "recording_id",
            "onset_s",
            "classes",
            "name",
            "meta",
        }
        missing = sorted(need - set(z.files))
        if missing or str(z["format"]) != FORMAT:
            raise ValueError(f"{path}: not a {FORMAT} file (missing {missing})")
        ch = z["channels"]
        n, total = len(ch), int(ch.sum()) if len(ch) else 0
        sig, sens, st = z["signal"], z["sensors"], z["sensor_type"]
        if (
            (ch < 1).any()
            or sig.ndim != 2
            or sig.shape[0] != total
            or sens.shape != (total, 6)
            or st.shape != (total,)
            or any(len(z[k]) != n for k in ("label", "subject", "recording_id", "onset_s"))
        ):
            raise ValueError(f"{path}: array sizes disagree with the channel counts")
        ends = np.cumsum(ch)
        starts = ends - ch
        labels, subj, rec, onset = z["label"], z["subject"], z["recording_id"], z["onset_s"]
        windows = [
            Window(
                sig[a:b],
                sens[a:b],
                st[a:b],
                int(labels[i]),
                str(subj[i]),
                str(rec[i]),
                float(onset[i]),
            )
            for i, (a, b) in enumerate(zip(starts, ends, strict=True))
        ]
        return LabelledSet(
            windows, [str(c) for c in z["classes"]], str(z["name"]), json.loads(str(z["meta"]))
        )
