"""Tokens and features of any MNE recording: ``brainomni.embed(raw_or_epochs, model)``.

The recording goes through the corpus path, unchanged: it is written to a temporary FIF
file and cleaned by :func:`brainomni.clean.preprocess_recording` (sensor table,
filters, resampling to 256 Hz, bad channels, re-reference) into a temporary store; its
windows are read, rejected and normalised by the pack's own code
(:class:`brainomni.pack.shards._Recording`, :func:`~brainomni.pack.windows.qc_reason`,
:func:`~brainomni.pack.windows.normalise_window`, positions by
:func:`~brainomni.pack.windows.normalise_positions`), so a window embedded here is the
sample the pack would have written (in float32, the pack's ``dtype="float32"``).

- ``mne.io.Raw``: windows of ``window_s`` seconds (default: the pack profile the model was
  trained on, 10 s for a tokenizer, 30 s for BrainOmni), non-overlapping, from the start.
- ``mne.Epochs``: the epochs are concatenated in time and cleaned as one recording (bad
  channels are judged on all of them; filters ring for a few samples across the joins,
  as they would at the edges of separately cleaned epochs); each epoch gives one window of
  its length rounded down to whole 2-s tokenizer windows (or ``window_s`` windows within it).
  The data is what ``Epochs.get_data()`` gives: with the file's SSP projectors applied when
  the Epochs were built with ``proj=True`` (MNE's default), which a Raw does not have.

Returns an :class:`Embedding`: per kept window the codebook indices (tokens) and the
features: the quantised tokenizer features for a tokenizer, the downstream features of
:meth:`BrainOmni.encode` for BrainOmni. Rejected windows are counted with their reason.
A recording the cleaning skips or fails raises its outcome (:class:`~brainomni.errors.
SkipRecording` / :class:`~brainomni.errors.RecordingFailed`, with the reason).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

PROFILE_OF = {"tokenizer": "tokenizer-10s", "omni": "omni-30s"}


@dataclass
class Embedding:
    """Tokens and features of the kept windows of one recording.

    ``tokens`` (N, S, W, Q) int64 codebook indices; ``features`` (N, S, W, D) float32;
    ``windows`` (N, C, T) float32: the normalised model input; ``starts`` (N,) start sample
    of each window at ``sfreq`` (256 Hz) in the cleaned recording (for Epochs: in the
    concatenation); ``epochs`` (N,) the epoch of each window (-1 for a Raw);
    ``rejected``: windows not embedded, per reason; ``ch_names`` / ``sensor_type``: the
    sensor table's rows (C,); ``qc``: the cleaning's QC summary."""

    tokens: np.ndarray
    features: np.ndarray
    windows: np.ndarray
    starts: np.ndarray
    epochs: np.ndarray
    sfreq: float
    ch_names: list[str]
    sensor_type: np.ndarray
    sensors: np.ndarray
    rejected: dict[str, int] = field(default_factory=dict)
    qc: dict[str, Any] = field(default_factory=dict)
    kind: str = "tokenizer"

    def to_summary(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "windows": int(len(self.starts)),
            "tokens_shape": list(self.tokens.shape),
            "features_shape": list(self.features.shape),
            "sfreq": self.sfreq,
            "channels": len(self.ch_names),
            "rejected": self.rejected,
        }


def _load_model(model: Any):
    from brainomni.train.export import load_export

    if isinstance(model, str | Path):
        return load_export(model)
    return model


def _kind(model: Any) -> str:
    if hasattr(model, "quantizer"):
        return "tokenizer"
    if hasattr(model, "tokenizer") and hasattr(model, "encode"):
        return "omni"
    raise TypeError(
        f"model must be a BrainTokenizer, a BrainOmni or an export folder, got "
        f"{type(model).__name__}"
    )


def _as_raw(data: Any) -> tuple[Any, int | None]:
    """``(raw, samples per epoch)``: Epochs concatenated in time (``None`` for a Raw)."""
    import mne

    if isinstance(data, mne.io.BaseRaw):
        return data, None
    if isinstance(data, mne.BaseEpochs):
        x = data.get_data(verbose="error")  # E C n, SI units
        if x.shape[0] == 0:
            raise ValueError("the Epochs object holds no epochs (all dropped?)")
        cat = x.transpose(1, 0, 2).reshape(x.shape[1], -1)
        info = data.info.copy()
        return mne.io.RawArray(cat, info, verbose="error"), x.shape[2]
    raise TypeError(f"embed takes an mne.io.Raw or mne.Epochs, got {type(data).__name__}")


def embed(
    data: Any,
    model: Any,
    *,
    window_s: float | None = None,
    line_freq: float | None = None,
    bads: tuple[str, ...] = (),
    batch_size: int = 8,
    device: str = "cpu",
    clean_config: Any = None,
    work_dir: str | None = None,
) -> Embedding:
    """Tokens and features of ``data`` (an ``mne.io.Raw`` or ``mne.Epochs`` of any device)
    under ``model`` (a BrainTokenizer, a BrainOmni, or the folder of ``brainomni export``).
    See the module docstring. ``line_freq`` (Hz) overrides the file's; ``bads`` adds bad
    channels; ``work_dir`` holds the temporary FIF file and store (default: system temp)."""
    import torch

    from brainomni.clean import preprocess_recording
    from brainomni.errors import RecordingFailed, SkipRecording
    from brainomni.pack import get_profile
    from brainomni.pack.plan import read_recording_info
    from brainomni.pack.shards import _Recording  # the pack's own window reader
    from brainomni.pack.windows import normalise_window, qc_reason, window_starts
    from brainomni.records import RecordingRef
    from brainomni.signal.config import CleanConfig

    model = _load_model(model)
    kind = _kind(model)
    model = model.to(device).eval()
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    raw, per_epoch = _as_raw(data)
    cfg = clean_config or CleanConfig(line_freq=line_freq)
    profile = get_profile(PROFILE_OF[kind], dtype="float32")
    L = model.window_length if kind == "tokenizer" else model.tokenizer.window_length
    tmp = Path(tempfile.mkdtemp(prefix="brainomni-embed-", dir=work_dir))
    try:
        fif = tmp / "input_raw.fif"
        raw.save(str(fif), overwrite=True, verbose="error")
        res = preprocess_recording(
            RecordingRef(uri=str(fif), format="fif"),
            out=str(tmp / "rec.zarr"),
            config=cfg,
            bads=tuple(bads),
        )
        if res.outcome != "ok":
            cls = SkipRecording if res.outcome == "skipped" else RecordingFailed
            raise cls(
                f"the cleaning did not keep this recording ({res.outcome}): {res.reason}",
                error_class=res.error_class,
            )
        info = read_recording_info(str(tmp / "rec.zarr"))
        rec = _Recording(info, profile, None)
        spans = _spans(info.n_times, float(raw.info["sfreq"]), profile.sfreq, per_epoch)
        if per_epoch is None:
            win = int(round((window_s or profile.window_s) * profile.sfreq))
        else:
            win = int(round(window_s * profile.sfreq)) if window_s else spans[0][1] // L * L
            if win < L:
                raise ValueError(
                    f"epochs of {per_epoch / raw.info['sfreq']:.3g} s are shorter than one "
                    f"{L / profile.sfreq:g}-s tokenizer window: make longer epochs"
                )
        if win < L or win % L:
            raise ValueError(
                f"window_s={win / profile.sfreq:g} s: use a multiple of the tokenizer's "
                f"{L / profile.sfreq:g}-s window"
            )
        rejected: Counter[str] = Counter()
        xs, starts, epochs = [], [], []
        eps = rec.eps
        for e, (a, n) in enumerate(spans):
            st = window_starts(n, win, win) + a
            for start, x in rec.windows(st, win) if len(st) else ():
                reason = "nonfinite_positions" if not rec.sensors_ok else None
                if reason is None and rec.overlaps_bad(start, win):
                    reason = "bad_segment"
                reason = reason or qc_reason(x, rec.types, profile.qc)
                if reason is not None:
                    rejected[reason] += 1
                    continue
                xs.append(normalise_window(x, rec.types, eps=eps))
                starts.append(start)
                epochs.append(e if per_epoch is not None else -1)
            if len(st) == 0:
                rejected["shorter_than_window"] += 1
        types = rec.types.astype(np.int64)
        tokens, feats = [], []
        pos = torch.from_numpy(rec.sensors)[None].to(device)
        stt = torch.from_numpy(types)[None].to(device)
        with torch.no_grad():
            for i in range(0, len(xs), batch_size):
                xb = torch.from_numpy(np.stack(xs[i : i + batch_size])).to(device)
                B = xb.shape[0]
                p, t = pos.expand(B, -1, -1), stt.expand(B, -1)
                if kind == "tokenizer":
                    f, idx = model.tokenize(xb, p, t)
                else:
                    _, idx = model.tokens(xb, p, t)
                    f = model.encode(xb, p, t)
                tokens.append(idx.cpu().numpy().astype(np.int64))
                feats.append(f.float().cpu().numpy())
        C = len(types)
        return Embedding(
            tokens=np.concatenate(tokens) if tokens else np.zeros((0, 0, 0, 0), np.int64),
            features=np.concatenate(feats) if feats else np.zeros((0, 0, 0, 0), np.float32),
            windows=np.stack(xs) if xs else np.zeros((0, C, win), np.float32),
            starts=np.asarray(starts, dtype=np.int64),
            epochs=np.asarray(epochs, dtype=np.int64),
            sfreq=profile.sfreq,
            ch_names=list(res.table.names),
            sensor_type=types,
            sensors=rec.sensors,
            rejected=dict(sorted(rejected.items())),
            qc=res.qc or {},
            kind=kind,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _spans(
    n_out: int, sfreq_in: float, sfreq_out: float, per_epoch: int | None
) -> list[tuple[int, int]]:
    """``[(first sample, samples)]`` in the cleaned recording: the whole of it for a Raw,
    one span per epoch (its samples mapped to the output rate) for Epochs."""
    if per_epoch is None:
        return [(0, n_out)]
    r = sfreq_out / sfreq_in
    n_ep = int(round(n_out / (per_epoch * r)))
    out = []
    for e in range(max(n_ep, 1)):
        # rounded: at a non-integer rate ratio (300.3 Hz) an epoch maps to a fractional span
        a = int(round(e * per_epoch * r))
        b = min(n_out, int(round((e + 1) * per_epoch * r)))
        out.append((a, max(0, b - a)))
    return out
