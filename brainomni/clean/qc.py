"""Quality control of one cleaned recording: the ``qc`` dict in its store and report.

Per-type RMS, flat and clipped channels, line/cHPI frequencies, PSD summaries, the file's
BAD_* segments, where EEG positions came from; and the bad-fraction rule that skips a
recording with too few good channels to interpolate.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import SkipRecording
from ..records import EEG, GRAD, MAG, SENSOR_TYPE_NAMES, SensorTable
from ..sensors.coils import meg_compensation_grade


def recording_qc(c, bads, rep) -> dict[str, Any]:
    """The QC dict of one cleaned recording (stored in its attrs, shown by ``inspect``).

    ``c`` is the recording's :class:`~brainomni.clean.passes.Cleaner` after both passes;
    ``bads``: row -> reasons; ``rep``: the bad-channel rules' report or None."""
    table, n_out = c.table, c.n_out
    names = table.names
    rms = {}
    for t in (EEG, MAG, GRAD):
        rows = np.flatnonzero(table.types == t)
        if rows.size:
            rms[SENSOR_TYPE_NAMES[t]] = float(
                np.sqrt(c.sumsq[rows].sum() / (rows.size * max(1, n_out)))
            )
    n = len(names)
    flat_s = rep.flat_seconds if rep is not None else np.zeros(n)
    clip = rep.clipped_fraction if rep is not None else np.zeros(n)
    freqs, psd = c.stats.psd()
    return {
        "bad_channels": [{"name": names[i], "reasons": bads[i]} for i in sorted(bads)],
        "interpolated": [names[i] for i in sorted(bads)],
        "dropped": [{"name": d.name, "reason": d.reason} for d in table.dropped],
        "n_channels": table.summary(),
        "meg_compensation_grade": meg_compensation_grade(c.raw.info),  # as stored
        **position_qc(table),
        "flat_seconds": {names[i]: float(flat_s[i]) for i in np.flatnonzero(flat_s)},
        "flat_seconds_total": float(np.sum(flat_s)),
        "clipped_fraction": float(np.mean(clip)) if n else 0.0,
        "clipped_channels": {names[i]: round(float(clip[i]), 4) for i in np.flatnonzero(clip)},
        "line_freq": c.line_freq,
        "line_freq_source": c.line_src,
        "notch_freqs": list(c.plans[-1].notch_freqs),
        "chpi_freqs": list(c.chpi),
        "sfreq_in": c.sfreq,
        "sfreq_out": c.config.sfreq,
        "input_duration_s": c.n_times / c.sfreq,
        "output_duration_s": n_out / c.config.sfreq,
        "rms": rms,
        "channel_rms": [float(np.sqrt(v / max(1, n_out))) for v in c.sumsq],
        "psd": psd_summary(freqs, psd, table, bads),
        "bad_segments": bad_segments(c.raw),
        "rate_error": c.plans[0].ratio.rate_error,
        "preloaded": c.opened.preload_reason,
        "block_geometry": [
            {
                "nfft_in": p.nfft_in,
                "hop_in": p.hop_in,
                "margin_in": p.margin_in,
                "ratio": f"{p.ratio.up}/{p.ratio.down}",
            }
            for p in c.plans
        ],
    }


def position_qc(table: SensorTable) -> dict[str, Any]:
    """Where the EEG positions came from (per-source counts) and whether they are mixed
    (file / electrodes.tsv / template in one recording: allowed, but flagged)."""
    eeg = [s for s, t in zip(table.pos_source, table.types, strict=True) if t == EEG]
    counts = {k: eeg.count(k) for k in sorted(set(eeg))}
    return {"eeg_pos_sources": counts, "eeg_pos_mixed": len(counts) > 1}


def psd_summary(freqs, psd, table, bads) -> dict[str, Any]:
    """Median Welch PSD per sensor type (good channels) and each bad channel's, log10 SI²/Hz,
    before spatial operators: what ``inspect --plot`` and dataset cards draw."""
    out: dict[str, Any] = {"freqs": [float(f) for f in freqs]}
    if not psd.any():
        return out
    lp = np.log10(np.maximum(psd, 1e-40))
    for t in (EEG, MAG, GRAD):
        rows = [i for i in np.flatnonzero(table.types == t) if i not in bads]
        if rows:
            out[SENSOR_TYPE_NAMES[t]] = np.round(np.median(lp[rows], axis=0), 3).tolist()
    out["bad"] = {table.names[i]: np.round(lp[i], 3).tolist() for i in sorted(bads)[:32]}
    return out


def bad_segments(raw) -> list[list[float]]:
    """[start, stop] seconds (from the first sample) of the file's BAD_* annotations, e.g.
    EGI/CTF acquisition skips (``BAD_ACQ_SKIP``): filtered output near them is not signal,
    and pack rejects windows that overlap them (reason ``bad_segment``)."""
    ann = raw.annotations
    if len(ann) == 0:
        return []
    offset = raw.first_time if ann.orig_time is not None else 0.0
    dur = raw.n_times / raw.info["sfreq"]
    out = []
    for a in ann:
        if str(a["description"]).upper().startswith("BAD"):
            lo = max(0.0, float(a["onset"]) - offset)
            hi = min(dur, lo + float(a["duration"]))
            if hi >= lo:
                out.append([round(lo, 4), round(hi, 4)])
    return out


def check_bad_fraction(bads: dict[int, list[str]], table: SensorTable, uri: str, config) -> None:
    for t in (EEG, MAG, GRAD):
        rows = np.flatnonzero(table.types == t)
        if rows.size == 0:
            continue
        n_bad = sum(1 for r in rows if int(r) in bads)
        if n_bad / rows.size > config.max_bad_fraction or n_bad == rows.size:
            raise SkipRecording(
                f"{uri}: {n_bad} of {rows.size} {SENSOR_TYPE_NAMES[t]} channels are bad "
                f"(more than {config.max_bad_fraction:.0%}); too few good channels to interpolate",
                error_class="TooManyBadChannels",
            )
