"""QC figure of one cleaned recording: spectra per sensor type, bad channels, channel RMS."""

from __future__ import annotations

from typing import Any

import numpy as np


def plot_qc(result: dict[str, Any], path: str) -> str:
    """Write a PNG for ``PreprocessResult.to_json()``; returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    qc = result.get("qc") or {}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5))
    psd = qc.get("psd") or {}
    freqs = np.asarray(psd.get("freqs", []))
    colors = {"EEG": "tab:blue", "MAG": "tab:green", "GRAD": "tab:purple"}
    for t, c in colors.items():
        if t in psd:
            ax1.plot(freqs, psd[t], color=c, lw=2, label=f"{t} (median of good channels)")
    for i, (name, v) in enumerate((psd.get("bad") or {}).items()):
        ax1.plot(
            freqs, v, color="tab:red", lw=0.8, alpha=0.8, label="bad channels" if i == 0 else None
        )
        ax1.annotate(name, (freqs[-1], v[-1]), fontsize=7, color="tab:red")
    for f in qc.get("notch_freqs", []):
        ax1.axvline(f, color="grey", ls=":", lw=1)
    ax1.axvspan(96, 128, color="grey", alpha=0.1)
    ax1.set(
        xlabel="Hz",
        ylabel="log10 PSD (SI²/Hz)",
        xlim=(0, 128),
        title="Welch PSD after filtering (dotted: notches; shaded: above the band)",
    )
    ax1.legend(fontsize=8)
    chans = result.get("channels") or []
    rms = qc.get("channel_rms") or []
    bad = {b["name"] for b in qc.get("bad_channels", [])}
    if chans and rms:
        x = np.arange(len(chans))
        for t, c in colors.items():
            idx = [i for i, ch in enumerate(chans) if ch["type"] == t]
            if idx:
                ax2.scatter(x[idx], np.asarray(rms)[idx], s=8, color=c, label=t)
        bidx = [i for i, ch in enumerate(chans) if ch["name"] in bad]
        if bidx:
            ax2.scatter(
                x[bidx],
                np.asarray(rms)[bidx],
                s=40,
                facecolors="none",
                edgecolors="tab:red",
                label="interpolated",
            )
        ax2.set_yscale("log")
        ax2.set(xlabel="channel", ylabel="RMS after cleaning (SI)", title="Channel RMS")
        ax2.legend(fontsize=8)
    name = str(result.get("uri", "")).rstrip("/").split("/")[-1]
    fig.suptitle(
        f"{name}: {result.get('outcome')}  {result.get('summary', {})}  "
        f"{len(bad)} bad, {len(result.get('dropped', []))} dropped",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
