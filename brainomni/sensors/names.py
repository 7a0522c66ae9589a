"""EEG channel names: vendor spellings normalised to the standard 10-05 labels.

Handled spellings (case-insensitive): an ``EEG``/``POL`` prefix (``EEG FP1-REF``), common
reference suffixes (``-REF``, ``-LE``, ``-RE``, ``-AR``, ``-AVG``, ``-A1A2``, ``-M1M2``,
``-A1``/``-A2``/``-M1``/``-M2``, ``-LINKED``), trailing dots (PhysioNet ``Fc5.``), the old
10-20 temporal names (T3/T4/T5/T6 become T7/T8/P7/P8) and ``Fp1``/``FP1``/``fp1``.

A name that keeps a ``-X`` part after this is a derivation. :func:`match_montage` looks at all
names together: when every derivation shares one second electrode (``Fp1-Cz``, ``C3-Cz``...)
that electrode is a common reference and is stripped; otherwise (``Fp1-F7``, ``F7-T7``:
bipolar) the channels cannot be placed. Names of a BioSemi ABC cap (``A1``...``H32``) are not
10-05 labels even where they look like one (``C3``, ``A1``), so a set that contains three
unmistakable ABC names (``B7``, ``A15``...) leaves all its letter-number names unplaced.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence

import numpy as np

MONTAGE = "standard_1005"  # the label recorded as pos_source ("montage:standard_1005")
# MNE 1.13 renamed standard_1005 to colin27_1005 (identical 343 positions) and deprecates the
# old name; use whichever this MNE provides without the deprecation warning.
_MONTAGE_NAMES = ("colin27_1005", "standard_1005")

_PREFIX = re.compile(r"^(?:EEG|POL)(?:[\s_:\-]+|(?=[A-Z]{1,3}\d|[A-Z]{1,3}Z\b))", re.IGNORECASE)
_REF_SUFFIX = re.compile(
    r"[\s_\-]+(?:REF|LE|RE|AR|AVG|AV|CAR|A1A2|A1\+A2|M1M2|M1\+M2|LINKED|LNKD|A1|A2|M1|M2)$",
    re.IGNORECASE,
)
_DERIVATION = re.compile(r"^([A-Za-z0-9]+)[\s]*-[\s]*([A-Za-z0-9]+)$")
_OLD_NAMES = {"T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8"}
_ABC = re.compile(r"^[A-H]([1-9]|[12]\d|3[0-2])$")  # unmistakable when not a 10-05 label
_LETTER_NUMBER = re.compile(r"^[A-Z]\d{1,2}$")  # left unplaced in an ABC-cap set (C3, I1...)

# Names that say the channel is not EEG even when the file types it EEG (EDF, CNT...).
_NON_EEG = (
    (re.compile(r"ECG|EKG"), "ecg"),
    (re.compile(r"EOG|^[HV]EO[LRG]?$|^(LOC|ROC)$|^E[12]-?M[12]$"), "eog"),
    (re.compile(r"EMG|^CHIN"), "emg"),
    (re.compile(r"RESP|THOR|ABDO?|^ABD|SPO2|SAO2|PLETH|PULSE|NASAL|^FLOW|AIRFLOW|SNORE"), "resp"),
    (re.compile(r"^(STATUS|TRIGGER|TRIG|STI\d*|PHOTIC|EVENT|MARKER)$"), "stim"),
    (re.compile(r"^(IBI|BURSTS|SUPPR|DC\d+|TEMP|LIGHT|POSITION|OXIM|ERGO.*)$"), "misc"),
)


@functools.lru_cache(maxsize=1)
def _montage_index() -> dict[str, tuple[str, tuple[float, float, float]]]:
    """Upper-cased 10-05 label -> (canonical label, position in metres, head frame)."""
    import mne

    builtin = set(mne.channels.get_builtin_montages())
    kind = next((k for k in _MONTAGE_NAMES if k in builtin), MONTAGE)
    montage = mne.channels.make_standard_montage(kind)
    positions = montage.get_positions()["ch_pos"]
    index: dict[str, tuple[str, tuple[float, float, float]]] = {}
    for name, xyz in positions.items():
        key = name.upper()
        if key in index:  # pragma: no cover - the montage has no case-only duplicates
            raise RuntimeError(f"{MONTAGE} has two labels spelled {name!r} ignoring case")
        index[key] = (name, tuple(float(v) for v in xyz))
    return index


def _core(name: str) -> str:
    """Upper-cased name without prefix, reference suffix or trailing dots."""
    s = name.strip().rstrip(".").strip()
    s = _PREFIX.sub("", s).strip()
    s = _REF_SUFFIX.sub("", s).strip().rstrip(".")
    return s.upper()


def _lookup(label: str) -> str | None:
    label = _OLD_NAMES.get(label.upper(), label.upper())
    hit = _montage_index().get(label)
    return hit[0] if hit else None


def normalize_eeg_name(name: str) -> str | None:
    """The 10-05 label for one vendor channel name, or ``None`` when it is not one.

    ``"EEG FP1-REF"`` -> ``"Fp1"``, ``"EEG T3-LE"`` -> ``"T7"``, ``"FPZ"`` -> ``"Fpz"``,
    ``"Fc5."`` -> ``"FC5"``, ``"EEG 001"`` -> ``None``, ``"Fp1-F7"`` (bipolar) -> ``None``.
    """
    core = _core(name)
    if not core or _DERIVATION.match(core):
        return None
    return _lookup(core)


def non_eeg_kind(name: str) -> str | None:
    """``"ecg"``, ``"eog"``, ``"emg"``, ``"resp"``, ``"stim"`` or ``"misc"`` when the name says
    the channel is not EEG (``EEG EKG1-REF``, ``VEOGR``, ``Status``...), else ``None``."""
    whole = _PREFIX.sub("", name.strip()).upper().replace(" ", "")
    core = _core(name).replace(" ", "")
    for pattern, kind in _NON_EEG:
        if pattern.search(core) or pattern.search(whole):
            return kind
    return None


def _common_reference(cores: Sequence[str]) -> str | None:
    """The second electrode shared by every derivation-style name, if there is one."""
    seconds = {m.group(2) for c in cores if (m := _DERIVATION.match(c))}
    firsts = [c for c in cores if _DERIVATION.match(c)]
    if len(seconds) == 1 and len(firsts) >= 2:
        return seconds.pop()
    return None


def _is_abc_cap(cores: Iterable[str]) -> bool:
    """At least three names that only a BioSemi ABC cap uses (``B7``, ``A15``, ``D3``...)."""
    index = _montage_index()
    unmistakable = {c for c in cores if _ABC.match(c) and c not in index and c not in _OLD_NAMES}
    return len(unmistakable) >= 3


def resolve_names(names: Sequence[str]) -> tuple[dict[str, str], dict[str, str]]:
    """Resolve a recording's EEG names together.

    Returns ``(matched, unmatched)``: ``matched`` maps a channel name to its 10-05 label (the
    first channel wins when two resolve to the same label), ``unmatched`` maps every other
    name to the reason it could not be placed.
    """
    cores = [_core(n) for n in names]
    ref = _common_reference(cores)
    abc = _is_abc_cap(cores)
    matched: dict[str, str] = {}
    unmatched: dict[str, str] = {}
    owner: dict[str, str] = {}
    for name, core in zip(names, cores, strict=True):
        if ref is not None and (m := _DERIVATION.match(core)) and m.group(2) == ref:
            core = m.group(1)
        if not core:
            unmatched[name] = "empty channel name"
            continue
        if _DERIVATION.match(core):
            unmatched[name] = f"bipolar derivation {core!r} has no single position"
            continue
        if abc and _LETTER_NUMBER.match(core):
            unmatched[name] = f"BioSemi ABC cap label {core!r} is not a 10-05 position"
            continue
        label = _lookup(core)
        if label is None:
            unmatched[name] = f"name {core!r} is not a {MONTAGE} label"
        elif label in owner:
            unmatched[name] = f"same 10-05 position ({label}) as channel {owner[label]!r}"
        else:
            owner[label] = name
            matched[name] = label
    return matched, unmatched


def match_montage(names: Sequence[str]) -> dict[str, tuple[str, np.ndarray]]:
    """Channel name -> (10-05 label, xyz in metres, MNE head frame) for the names that
    resolve; unresolvable names are absent (see :func:`resolve_names` for the reasons)."""
    matched, _ = resolve_names(names)
    index = _montage_index()
    return {
        name: (label, np.asarray(index[label.upper()][1], dtype=np.float64))
        for name, label in matched.items()
    }
