"""Dataset card: Markdown plus PNG plots, written beside a manifest.

Signal manifests: hours per dataset and per device (stacked by split), the channel-count
histogram of the samples, and the average spectrum per sensor type (of the normalised
windows). Token manifests: the tokenizer, the source manifest and a plot of samples per split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PLOTS = ("hours.png", "channels.png", "spectra.png")
TOKEN_PLOTS = ("samples.png",)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _hours_plot(m: dict[str, Any], path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, title in ((axes[0], "by_dataset", "dataset"), (axes[1], "by_device", "device")):
        names = sorted({n for sp in m["splits"].values() for n in sp[key]})
        bottom = [0.0] * len(names)
        for split, sp in m["splits"].items():
            vals = [sp[key].get(n, {}).get("hours", 0.0) for n in names]
            ax.bar(range(len(names)), vals, bottom=bottom, label=split)
            bottom = [a + b for a, b in zip(bottom, vals, strict=True)]
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels([n[:28] for n in names], rotation=45, ha="right", fontsize=7)
        ax.set_ylabel("hours")
        ax.set_title(f"hours per {title}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _channels_plot(m: dict[str, Any], path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    items = sorted((int(k), v) for k, v in m["channel_hist"].items())
    ax.bar([str(k) for k, _ in items], [v for _, v in items])
    ax.set_xlabel("channels per sample")
    ax.set_ylabel("samples")
    ax.set_title("channel-count histogram")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _spectra_plot(m: dict[str, Any], path: Path) -> None:
    import numpy as np

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for t, s in m["spectra"].items():
        f = np.fft.rfftfreq(s["nfft"], 1.0 / s["sfreq"])
        ax.semilogy(f[1:], np.maximum(np.asarray(s["mean"])[1:], 1e-12), label=f"{t} (n={s['n']})")
    ax.set_xlabel("frequency (Hz)")
    ax.set_ylabel("power (normalised units)")
    ax.set_title("average spectrum per sensor type")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _token_card(m: dict[str, Any], folder: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    names = list(m["splits"])
    ax.bar(names, [m["splits"][n]["samples"] for n in names])
    ax.set_ylabel("samples")
    ax.set_title("token samples per split")
    fig.tight_layout()
    fig.savefig(folder / TOKEN_PLOTS[0], dpi=80)
    plt.close(fig)
    tk, src = m.get("tokenizer") or {}, m.get("source") or {}
    totals = m.get("totals") or {}
    lines = [
        f"# {m.get('name', 'tokens')} {m.get('version', '')}".rstrip(),
        "",
        f"Token shards (format `{m['format']}`), content hash "
        f"`{m.get('content_hash', '(pending)')}`, at `{m['shards_root']}`.",
        "",
        f"Tokenizer weights sha256 `{tk.get('sha256')}`, window overlap {tk.get('overlap_ratio')}.",
        "",
        f"Tokenized from manifest {src.get('name')} {src.get('version')} "
        f"(content hash `{src.get('content_hash')}`).",
        "",
        f"Totals: {totals.get('samples')} samples, {totals.get('shards')} shards, "
        f"{(totals.get('bytes') or 0) / 1e6:.1f} MB.",
        "",
        "## Splits",
        "",
        "| split | samples | shards |",
        "|---|---|---|",
    ]
    for name, sp in m["splits"].items():
        lines.append(f"| {name} | {sp['samples']} | {sp['shards']} |")
    lines += ["", "## Plots", "", f"![samples per split]({TOKEN_PLOTS[0]})", ""]
    path = folder / "card.md"
    path.write_text("\n".join(lines))
    return path


def write_card(m: dict[str, Any], folder: Path) -> Path:
    """Write ``card.md`` and the plots into ``folder``; the card's path."""
    from ..formats.manifest import manifest_kind

    folder = Path(folder)
    if manifest_kind(m) == "tokens":
        return _token_card(m, folder)
    _hours_plot(m, folder / PLOTS[0])
    _channels_plot(m, folder / PLOTS[1])
    _spectra_plot(m, folder / PLOTS[2])
    pk = m["packing"]["config"]
    lines = [
        f"# {m['name']} {m['version']}",
        "",
        f"Content hash `{m.get('content_hash', '(pending)')}`; "
        f"packed from `{m['shards_root']}` with brainomni {m['code_version']['brainomni']}"
        f" (git `{m['code_version']['git'] or 'unknown'}`).",
        "",
        f"Profile **{pk['profile']}**: {pk['window_s']:g} s windows, stride {pk['stride_s']:g} s,"
        f" {pk['sfreq']:g} Hz, {pk['dtype']}; per-type common average and group std "
        f"(eps EEG {pk['eps_eeg']:g}, MEG {pk['eps_meg']:g}); positions normalised: "
        f"{pk['normalize_positions']}. Packing config `{m['packing']['hash']}`, split config "
        f"`{m['splitting']['hash']}`, cleaning configs {', '.join(m['cleaning']['hashes'])}.",
        "",
        f"Totals: {m['totals']['samples']} samples, {m['totals']['hours']:.3f} h, "
        f"{m['totals']['shards']} shards, {m['totals']['bytes'] / 1e6:.1f} MB.",
        "",
        "## Splits",
        "",
        "| split | samples | hours | subjects | recordings |",
        "|---|---|---|---|---|",
    ]
    for name, sp in m["splits"].items():
        lines.append(
            f"| {name} | {sp['samples']} | {sp['hours']:.3f} | {sp['subjects']} | "
            f"{sp['recordings']} |"
        )
    lines += [
        "",
        "## Sources",
        "",
        "| dataset | versions | device | modality | recordings | subjects | checksum |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in m["sources"]:
        lines.append(
            f"| {s['dataset']} | {', '.join(v or '?' for v in s['versions'])} | {s['device']} | "
            f"{', '.join(s['modality'])} | {s['recordings']} | {s['subjects']} | "
            f"`{s['checksum'][:12]}` |"
        )
    lines += [
        "",
        "## Drops",
        "",
        f"Rejected windows: {m['rejected_windows'] or 'none'}. "
        f"Recordings not packed: {m['dropped_recordings'] or 'none'}.",
        "",
        f"Leakage check: passed ({m['leakage_check']['entries']} recording entries, "
        f"{m['leakage_check']['subjects']} subjects).",
        "",
        "## Plots",
        "",
        "![hours per dataset and device](hours.png)",
        "",
        "![channel-count histogram](channels.png)",
        "",
        "![average spectra](spectra.png)",
        "",
    ]
    path = folder / "card.md"
    path.write_text("\n".join(lines))
    return path
