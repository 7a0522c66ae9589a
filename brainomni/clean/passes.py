"""The two passes over one opened recording (:class:`Cleaner`).

First pass: read, filter and resample block by block, apply the spatial operator for the
bad channels known up front, write, gather statistics. Then the bad-channel rules over the
whole recording; a second, in-place pass rewrites only the rows that new bad channels
change (see :mod:`brainomni.clean.recording`).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .. import __version__
from ..errors import RecordingFailed
from ..records import EEG, RecordingRef, SensorTable
from ..signal.config import CleanConfig
from .inspect import PreprocessResult
from .qc import bad_segments, check_bad_fraction

_UNITS = {107: "V", 112: "T", 201: "T/m"}  # FIFF unit codes


def _kept_info(raw, table: SensorTable):
    """MNE Info of the kept channels, with the sensor table's EEG positions applied."""
    import mne
    from mne.io.constants import FIFF

    # verbose="error": dropping the reference channels drops CTF compensators, expected here
    info = mne.pick_info(raw.info, list(map(int, table.picks)), verbose="error")
    with info._unlock():
        for i, ch in enumerate(info["chs"]):
            if table.types[i] == EEG and table.pos_source[i] != "file":  # incl. rescaled
                ch["loc"][:3] = table.pos[i]
                ch["loc"][3:6] = 0.0
                ch["coord_frame"] = FIFF.FIFFV_COORD_HEAD
        info["bads"] = []
    return info


def _chpi_freqs(info) -> tuple[float, ...]:
    import mne

    try:
        freqs = mne.chpi.get_chpi_info(info, on_missing="ignore")[0]
    except (ValueError, RuntimeError, KeyError):
        return ()
    return tuple(float(f) for f in np.atleast_1d(freqs))


def _line_freq(ref: RecordingRef, raw, config: CleanConfig) -> tuple[float | None, str]:
    from ..readers import recording_line_freq

    if config.line_freq is not None:
        return config.line_freq, "config"
    if ref.line_freq:
        return float(ref.line_freq), "bids"
    f = recording_line_freq(raw)
    if f:
        return float(f), "file"
    return None, "unknown"


class Cleaner:
    """The cleaning of one opened recording, step by step (see the module docstring)."""

    def __init__(
        self,
        opened,
        ref: RecordingRef,
        res: PreprocessResult,
        table: SensorTable,
        config: CleanConfig,
        bads: tuple[str, ...],
    ) -> None:
        from ..signal.design import plan_chain
        from ..signal.stats import ChannelStats

        self.opened, self.raw, self.ref, self.res = opened, opened.raw, ref, res
        self.table, self.config = table, config
        self.sfreq = float(self.raw.info["sfreq"])
        self.n_times = int(self.raw.n_times)
        self.line_freq, self.line_src = _line_freq(ref, self.raw, config)
        self.chpi = _chpi_freqs(self.raw.info) if config.chpi else ()
        # cHPI lines inside the band are notched too (stationary sinusoids)
        extra = tuple(f for f in self.chpi if f < config.h_freq + 24)
        self.plans = plan_chain(
            self.sfreq, len(table), config, line_freq=self.line_freq, extra_notch=extra
        )
        self.n_out = self.n_times
        for p in self.plans:
            self.n_out = p.n_out(self.n_out)
        chs = self.raw.info["chs"]
        self.units = [_UNITS.get(int(chs[int(p)]["unit"]), "?") for p in table.picks]
        self.info = _kept_info(self.raw, table)
        self.known = self._known_bads(bads)
        check_bad_fraction(self.known, table, ref.uri, config)
        self.stats = ChannelStats(
            len(table),
            self.sfreq,
            sfreq_out=config.sfreq,
            line_freqs=config.line_freqs(self.line_freq),
            # the spectral rule's PSD: EEG channels, the official segments, BAD spans out
            rule_rows=np.flatnonzero(table.types == EEG) if config.detect_bads else None,
            rule_n_fft=config.psd_n_fft,
            n_out_total=self.n_out,
            bad_spans=[
                (int(np.floor(a * config.sfreq)), int(np.ceil(b * config.sfreq)))
                for a, b in bad_segments(self.raw)
            ],
        )
        self.sumsq = np.zeros(len(table))
        self.picks = np.asarray(table.picks, dtype=int)
        # Each channel's first sample is subtracted (in float64, before the float32 blocks):
        # a large DC offset (e.g. 0.1 V on an unconnected EEG lead) would otherwise cost
        # float32 precision. Every chain ends with zero DC gain: the output is unchanged.
        self.offset = self.raw.get_data(picks=self.picks, start=0, stop=1)[:, 0]
        self.stats.offset = self.offset
        from ..readers.fifblocks import fif_block_reader

        # FIF (most MEG): a direct block reader, bit-identical to get_data and cheaper
        self.fast = fif_block_reader(self.raw, self.picks)

    def _known_bads(self, given: tuple[str, ...]) -> dict[int, list[str]]:
        """Bad channels known before reading the signal, with their reasons."""
        index = {n: i for i, n in enumerate(self.table.names)}
        known: dict[int, list[str]] = {}
        for names, why in (
            (self.raw.info["bads"], "marked bad in the file"),
            (self.ref.bad_channels, "marked bad in channels.tsv"),
            (given, "given as bad"),
        ):
            for n in names:
                if n in index:
                    known.setdefault(index[n], []).append(why)
        return known

    def _read(self, a: int, b: int) -> np.ndarray:
        return self.raw.get_data(picks=self.picks, start=a, stop=b)

    @property
    def reader(self):
        """What the block filter reads from: the direct FIF reader or ``get_data``."""
        return self.fast if self.fast is not None else self._read

    def first_pass(self, writer, op, progress: bool) -> None:
        """Read, filter and resample every block; apply ``op``; write; gather statistics."""
        from ..signal.stream import run_chain

        bar = _progress(progress, self.n_out, self.ref.uri)
        try:
            for _, y in run_chain(
                self.plans,
                self.reader,
                len(self.table),
                self.n_times,
                on_input=self.stats.update_input,
                on_spectrum=self.stats.update_spectrum,
                offset=self.offset,
                reuse_output=True,  # each block is consumed (and copied by the writer) here
            ):
                self.stats.update_output(y)
                if not op.is_identity:
                    op.apply(y)
                sq = _sum_squares(y)
                # a NaN or inf anywhere in the block makes its channel's sum of squares
                # non-finite (_sum_squares redoes an overflowing block in float64)
                if not np.all(np.isfinite(sq)):
                    raise RecordingFailed(
                        f"{self.ref.uri}: non-finite samples (NaN/inf) in the signal; the "
                        "file is corrupt or a channel is broken",
                        error_class="NonFiniteSignal",
                    )
                self.sumsq += sq
                writer.append(y)
                if bar is not None:
                    bar.update(y.shape[1])
        finally:
            if bar is not None:
                bar.close()

    def detect(self):
        """(all bads with reasons, the rules' report or None) over the whole recording."""
        from ..signal.bads import detect_bads

        rep = None
        if self.config.detect_bads:
            freqs, psd = self.stats.rule_psd()
            rep = detect_bads(
                windows=self.stats.windows(),
                line_ratio=self.stats.line_ratio(),
                spectrum=(self.stats.rule_rows, freqs, psd),
                types=self.table.types,
                units=self.units,
                config=self.config,
                known=set(self.known),
            )
        bads = {k: list(v) for k, v in self.known.items()}
        for i, why in rep.reasons.items() if rep is not None else ():
            bads.setdefault(i, []).extend(why)
        check_bad_fraction(bads, self.table, self.ref.uri, self.config)
        return bads, rep

    def correct(self, writer, op_before, bads) -> None:
        """Second, in-place pass for bads found by the rules (rewrites changed rows only)."""
        from ..stores.recording import rewrite_signal

        op = spatial_op(self.info, self.table, sorted(bads), self.config, self.ref.uri)
        changed = op.changed_rows(op_before)
        # the operators mix channels within a modality group (EEG; MEG = MAG + GRAD) only
        group = np.where(self.table.types == EEG, 0, 1)
        needed = np.flatnonzero(np.isin(group, np.unique(group[changed])))
        self.sumsq[changed] = 0.0

        def fix(y: np.ndarray) -> np.ndarray:
            op.apply(y)
            yc = y[changed]
            self.sumsq[changed] += np.einsum("ij,ij->i", yc, yc, dtype=np.float64)
            return y

        rewrite_signal(writer, fix, rows=changed, reads=needed)

    def attrs(self, qc: dict[str, Any]) -> dict[str, Any]:
        ref, res, plans = self.ref, self.res, self.plans
        return {
            "config": self.config.to_dict(),
            "config_hash": self.config.hash,
            "provenance": {
                "source_uri": ref.uri,
                "source_checksum": ref.checksum,
                "recording_id": ref.recording_id,
                "dataset": ref.dataset,
                "dataset_version": ref.dataset_version,
                "subject": ref.subject,
                "session": ref.session,
                "task": ref.task,
                "run": ref.run,
                "modality": ref.modality,
                "format": res.fmt,
                "reader": res.reader,
                "code_version": __version__,
                "sfreq_in": self.sfreq,
                "rate_error": plans[0].ratio.rate_error,
                "fixes": res.fixes,
            },
            "qc": qc,
        }


def _sum_squares(y: np.ndarray) -> np.ndarray:
    """Per-channel sum of squares of a float32 block, in float64.

    BLAS dot products (SIMD, several accumulators: ~1e-7 relative) at a fifth of the cost
    of a float64 einsum; a block whose float32 sums overflow while its samples are finite
    is redone in float64. A NaN or inf sample leaves its channel's sum non-finite."""
    sq = np.fromiter((np.dot(r, r) for r in y), dtype=np.float64, count=y.shape[0])
    if not np.all(np.isfinite(sq)) and np.all(np.isfinite(y)):
        sq = np.einsum("ij,ij->i", y, y, dtype=np.float64)
    return sq


def _progress(enabled: bool, total: int, uri: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        unit="sample",
        unit_scale=True,
        desc=os.path.basename(uri.rstrip("/")),
        leave=False,
    )


def spatial_op(info, table, bad_rows, config, uri):
    from ..signal.spatial import build_spatial_op

    try:
        return build_spatial_op(
            info,
            table.types,
            bad_rows,
            origin=config.interpolate_origin,
            mode=config.interpolate_mode,
            eeg_reference=config.eeg_reference,
        )
    except (ValueError, RuntimeError, np.linalg.LinAlgError) as exc:
        raise RecordingFailed(
            f"{uri}: interpolation of bad channels failed: {exc}", error_class="InterpolationError"
        ) from exc
