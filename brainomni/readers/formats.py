"""The registry of recording formats: every per-format quirk lives here and nowhere else.

Each :class:`Format` names the MNE reader, the keyword arguments it needs, the files that
must travel with the main file (companions), which folder members must exist, and whether
block reads need the data preloaded. :func:`detect_format` maps a path or fsspec URL to a key.

Quirks recorded here (measured with MNE 1.13):

- FIF: ``allow_maxshield=True`` so MaxShield (active-shielding, not yet SSS-processed)
  recordings open instead of raising; split files (``name-1.fif``, BIDS ``_split-02``) are
  staged beside the first part.
- Neuroscan CNT: MNE's ``data_format="auto"`` needs the header's sample count; when it is 0
  (``scan41_short.cnt``) auto raises, and ``int32`` reads garbage (about 1 V medians). An
  explicit width is always passed, decided from header fields (:mod:`brainomni.readers.cnt`).
- ANT Neuro ``.cnt`` files share the extension; they are RIFF containers and are told apart by
  their first four bytes.
- EDF/BDF/GDF with mixed per-channel sampling rates: MNE upsamples the slower channels
  differently when reading blocks than when preloading, so those files are preloaded
  (:func:`edf_preload_reason`).
- BrainVision: the ``.vhdr`` names its data and marker files (``DataFile=``/``MarkerFile=``).
  How companions are found is in :mod:`brainomni.readers.companions`.
- CTF ``.ds`` and EGI ``.mff`` are folders; BTi/4D is a data file beside ``config`` and
  ``hs_file``.

This module imports neither mne nor fsspec at import time.
"""

from __future__ import annotations

import logging
import posixpath
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from brainomni.readers.companions import (
    CompanionFn,
    brainvision_companions,
    bti_companions,
    fif_split_companions,
    same_stem,
)

if TYPE_CHECKING:  # pragma: no cover
    from mne.io import BaseRaw

logger = logging.getLogger(__name__)

GENERIC = "generic"


PreloadFn = Callable[["BaseRaw"], "str | None"]
KwargsFn = Callable[[str], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Format:
    """One recording format.

    ``reader`` is the name of the function in ``mne.io``; ``extensions`` are lower-case and
    include the dot (longest match wins); ``folder`` formats are directories whose whole
    content is staged; ``required_members`` are glob patterns that must match a file inside a
    folder format; ``companions`` lists extra files for single-file formats;
    ``resolve_kwargs`` adds reader arguments decided from the local file itself;
    ``needs_preload`` forces preloading for every file of the format, ``preload_reason``
    decides it per file after opening; ``optional_packages`` maps an importable module to the
    pip install line that provides it; ``skip_reason`` marks formats that hold no EEG/MEG
    (eye tracking, fNIRS): they are recorded as skipped without being read;
    ``takes_preload`` is False for readers without a ``preload`` argument (FieldTrip).
    """

    key: str
    reader: str
    description: str
    extensions: tuple[str, ...] = ()
    folder: bool = False
    kwargs: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    companions: CompanionFn | None = None
    required_members: tuple[str, ...] = ()
    resolve_kwargs: KwargsFn | None = None
    needs_preload: bool = False
    preload_reason: PreloadFn | None = None
    optional_packages: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    skip_reason: str | None = None
    takes_preload: bool = True


# --------------------------------------------------------------------------- preload rules


def edf_preload_reason(raw: BaseRaw) -> str | None:
    """EDF/BDF/GDF: a reason to preload when data channels have different sampling rates.

    MNE resamples slower channels per block when not preloaded, which differs from the
    whole-file result (and leaves block-edge artefacts); preloading gives the exact result.
    """
    extras = getattr(raw, "_raw_extras", None) or [{}]
    n_samps = extras[0].get("n_samps")
    if n_samps is None:
        return None
    sel = extras[0].get("sel")
    tal_idx = extras[0].get("tal_idx")
    tal = {int(i) for i in (tal_idx if tal_idx is not None else ())}
    idx = [i for i in (range(len(n_samps)) if sel is None else sel) if i not in tal]
    rates = {int(n_samps[i]) for i in idx if i < len(n_samps)}
    if len(rates) > 1:
        return (
            f"channels sampled at {len(rates)} different rates (samples per record {sorted(rates)})"
        )
    return None


def cnt_reader_kwargs(path: str) -> dict[str, Any]:
    """Neuroscan CNT: the explicit ``data_format`` (:func:`brainomni.readers.cnt.cnt_data_format`)."""
    from brainomni.readers.cnt import cnt_data_format

    return {"data_format": cnt_data_format(path)}


# --------------------------------------------------------------------------- the registry


def _hint(*packages: str) -> Mapping[str, str]:
    return MappingProxyType(
        {p: f"pip install {p}  (or: pip install 'brainomni[ingest]')" for p in packages}
    )


_FNIRS = "fNIRS recording ({}): no EEG/MEG channels"
_MFF_HINT = {
    "mffpy": "pip install mffpy  (or: pip install 'brainomni[ingest]')",
    "defusedxml": "pip install defusedxml  (or: pip install 'brainomni[ingest]')",
}

_FORMATS: tuple[Format, ...] = (
    Format(
        "fif",
        "read_raw_fif",
        "MEGIN/Elekta Neuromag FIF (MaxShield allowed; split files)",
        (".fif", ".fif.gz"),
        kwargs=MappingProxyType({"allow_maxshield": True}),
        companions=fif_split_companions,
    ),
    Format(
        "ctf",
        "read_raw_ctf",
        "CTF .ds folder",
        (".ds",),
        folder=True,
        required_members=("*.res4", "*.meg4"),
    ),
    Format("kit", "read_raw_kit", "KIT/Yokogawa/Ricoh MEG", (".con", ".sqd")),
    Format(
        "bti",
        "read_raw_bti",
        "BTi/4D Magnes (data file beside config)",
        (),
        companions=bti_companions,
    ),
    Format("edf", "read_raw_edf", "EDF/EDF+", (".edf", ".rec"), preload_reason=edf_preload_reason),
    Format("bdf", "read_raw_bdf", "BioSemi BDF", (".bdf",), preload_reason=edf_preload_reason),
    Format("gdf", "read_raw_gdf", "GDF", (".gdf",), preload_reason=edf_preload_reason),
    Format(
        "brainvision",
        "read_raw_brainvision",
        "BrainProducts BrainVision (.vhdr + .vmrk + .eeg)",
        (".vhdr", ".ahdr"),
        companions=brainvision_companions,
    ),
    Format(
        "eeglab",
        "read_raw_eeglab",
        "EEGLAB .set (+ .fdt when the data is not embedded)",
        (".set",),
        companions=same_stem(".fdt", role="EEGLAB data file"),
        optional_packages=_hint("pymatreader"),
    ),
    Format("cnt", "read_raw_cnt", "Neuroscan CNT", (".cnt",), resolve_kwargs=cnt_reader_kwargs),
    Format(
        "ant",
        "read_raw_ant",
        "ANT Neuro CNT (RIFF)",
        (),
        optional_packages=_hint("antio"),
    ),
    Format(
        "egi_mff",
        "read_raw_egi",
        "EGI/Magstim MFF folder",
        (".mff",),
        folder=True,
        required_members=("info.xml", "signal1.bin"),
        optional_packages=MappingProxyType(_MFF_HINT),
    ),
    Format("egi", "read_raw_egi", "EGI simple binary", (".egi", ".raw")),
    Format(
        "mef",
        "read_raw_mef",
        "MEF3 session folder (.mefd)",
        (".mefd",),
        folder=True,
        optional_packages=_hint("pymef"),
    ),
    Format("fil", "read_raw_fil", "FIL/Cerca OPM (BIDS *_meg.bin + sidecars)", ("_meg.bin",)),
    Format("bci2k", "read_raw_bci2k", "BCI2000 .dat (told from Curry by its header)", ()),
    Format(
        "nicolet",
        "read_raw_nicolet",
        "Nicolet .data (+ .head)",
        (".data",),
        kwargs=MappingProxyType({"ch_type": "eeg"}),
        companions=same_stem(".head", required=True, role="Nicolet header"),
    ),
    Format(
        "nsx", "read_raw_nsx", "Blackrock NSx", (".ns1", ".ns2", ".ns3", ".ns4", ".ns5", ".ns6")
    ),
    Format(
        "fieldtrip",
        "read_raw_fieldtrip",
        "FieldTrip raw data structure (.mat)",
        (".mat",),
        kwargs=MappingProxyType({"info": None}),
        optional_packages=_hint("pymatreader"),
        takes_preload=False,
    ),
    Format(
        "eyelink",
        "read_raw_eyelink",
        "EyeLink eye tracker (.asc)",
        (".asc",),
        skip_reason="eye-tracking recording (EyeLink .asc): no EEG/MEG channels",
    ),
    Format("snirf", "read_raw_snirf", "SNIRF", (".snirf",), skip_reason=_FNIRS.format("SNIRF")),
    Format("nirx", "read_raw_nirx", "NIRx", (".hdr",), skip_reason=_FNIRS.format("NIRx")),
    Format("boxy", "read_raw_boxy", "BOXY", (".txt",), skip_reason=_FNIRS.format("BOXY .txt")),
    Format(
        "hitachi",
        "read_raw_hitachi",
        "Hitachi ETG (.csv)",
        (".csv",),
        skip_reason=_FNIRS.format("Hitachi .csv"),
    ),
    Format(
        "nihon_kohden",
        "read_raw_nihon",
        "Nihon Kohden .eeg (+ .21e, .pnt, .log)",
        (".eeg",),
        companions=same_stem(".PNT", ".21E", ".LOG", role="Nihon Kohden header"),
    ),
    Format("eximia", "read_raw_eximia", "Nexstim eXimia", (".nxe",)),
    Format("nedf", "read_raw_nedf", "Neuroelectrics NEDF", (".nedf",)),
    Format(
        "artemis123",
        "read_raw_artemis123",
        "ARTEMIS123 MEG (.bin + .txt header)",
        (".bin",),
        companions=same_stem(".txt", required=True, role="ARTEMIS123 header"),
    ),
    Format(
        "curry",
        "read_raw_curry",
        "Compumedics Curry",
        (".cdt", ".dat"),
        companions=same_stem(
            ".cdt.dpa", ".cdt.dpo", ".cdt.cef", ".dap", ".rs3", ".cef", role="Curry header"
        ),
        optional_packages=_hint("curryreader"),
    ),
    Format(
        "persyst",
        "read_raw_persyst",
        "Persyst .lay (+ .dat)",
        (".lay",),
        companions=same_stem(".dat", required=True, role="Persyst data file"),
    ),
    Format(GENERIC, "read_raw", "anything else mne.io.read_raw can open"),
)

FORMATS: Mapping[str, Format] = MappingProxyType({f.key: f for f in _FORMATS})
_BY_EXT = sorted(((e, f.key) for f in _FORMATS for e in f.extensions), key=lambda t: -len(t[0]))
_BTI_NAME = re.compile(r"^[a-z],rf", re.IGNORECASE)


def get_format(key: str) -> Format:
    """The registry entry for ``key``; ``ValueError`` listing the known keys otherwise."""
    try:
        return FORMATS[key]
    except KeyError:
        raise ValueError(f"unknown format {key!r}; known: {', '.join(sorted(FORMATS))}") from None


def _head(uri: str, storage_options: dict | None, n: int = 16) -> bytes:
    """The first ``n`` bytes of a file (empty when unreadable)."""
    try:
        import fsspec

        with fsspec.open(uri, "rb", **(storage_options or {})) as f:
            return f.read(n)
    except (OSError, ValueError):
        return b""


def _is_riff(uri: str, storage_options: dict | None) -> bool:
    """True when the file starts with a RIFF/RF64 tag (ANT Neuro CNT). False if unreadable."""
    return _head(uri, storage_options, 4) in (b"RIFF", b"RF64")


def _is_bci2000(uri: str, storage_options: dict | None) -> bool:
    """True when a ``.dat`` starts with a BCI2000 header (``BCI2000V= ...`` or the older
    ``HeaderLen=``); Curry ``.dat`` files are headerless binary."""
    return _head(uri, storage_options).startswith((b"BCI2000V", b"HeaderLen="))


def detect_format(path_or_uri: str, *, storage_options: dict | None = None) -> str:
    """Format key for a local path or fsspec URL, from its name (and, for ``.cnt``, its first
    bytes). Folder formats are recognised by their suffix (``.ds``, ``.mff``); BTi/4D by the
    4D data-file naming (``c,rfDC``, ``e,rfhp1.0Hz``...). Unknown names give ``"generic"``
    (``mne.io.read_raw``). BrainVision recordings are opened through their ``.vhdr``; a bare
    ``.eeg`` is taken as Nihon Kohden; a ``.dat`` is Curry unless it starts with a BCI2000
    header; ``*_meg.bin`` is FIL/Cerca OPM, any other ``.bin`` ARTEMIS123.
    """
    uri = str(path_or_uri)
    name = posixpath.basename(uri.replace("\\", "/").rstrip("/"))
    low = name.lower()
    if _BTI_NAME.match(name):
        return "bti"
    for ext, key in _BY_EXT:
        if low.endswith(ext):
            if key == "cnt" and _is_riff(uri, storage_options):
                return "ant"
            if key == "curry" and low.endswith(".dat") and _is_bci2000(uri, storage_options):
                return "bci2k"
            return key
    return GENERIC
