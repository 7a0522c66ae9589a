"""Downstream recipes: how to turn one dataset's recordings into labelled windows.

A recipe is a ``[[recipe]]`` table of ``manifests/downstream.toml`` (or any TOML file with
such tables). Every key is validated when loaded: unknown keys, missing required keys and
bad values raise ``ValueError`` naming the recipe and the fix. Fields:

* ``name`` (required): the recipe's name (``AD65``, ``TUAB``, ...).
* ``dataset``, ``version``: the source dataset (OpenNeuro accession and snapshot, TUH corpus)
  - informational, recorded in the set's ``meta``.
* ``modality``: ``eeg``, ``meg`` or ``emeg`` (which recordings of a BIDS root are used:
  its ``eeg/``, ``meg/`` or both datatype folders; MEG files keep their EEG channels).
* ``classes`` (required): class names; label ``i`` is ``classes[i]``.
* ``labels`` (required): where labels come from

  - ``events``: event-locked windows; events from BIDS ``*_events.tsv`` beside the recording
    (column ``event_column``, default ``trial_type``), else the file's annotations, else its
    stim channel (``event_source`` forces one of ``bids``, ``annotations``, ``stim``);
  - ``participants``: one label per subject from ``participants.tsv`` column
    ``label_column``, consecutive windows over each recording;
  - ``table``: one label per subject or recording from a label table (TSV/CSV with the
    columns ``label_key`` and ``label_column``) given to the builder;
  - ``tuab``: the ``normal``/``abnormal`` folder above a TUAB file (and ``train``/``eval``);
  - ``tuev``: the TUEV ``.rec`` event file beside each EDF (``channel,start,stop,code``).

* ``label_map``: raw label value -> class name (values not in the map are dropped and
  counted as ``unmapped``); omitted = the raw value must already be a class name.
  ``label_map_by_run``: ``{ "4" = { T1 = "left_fist" }, ... }`` - a map per run number
  (event-locked recipes whose codes mean different things in different runs, PhysioNet-MI);
  the run comes from the recording's BIDS ``run`` entity, else ``R<nn>`` at the end of its
  file name (eegmmidb ``S001R04.edf``); recordings of other runs are skipped.
* ``window_s`` (required): window length (s). ``tmin_s``: for event-locked windows, where the
  window starts relative to the event onset (``-1.0`` with ``window_s = 2`` is onset -1 ... +1
  s). ``stride_s``: for recording/subject labels, the step between windows (default
  ``window_s``).
* ``line_freq``: the mains frequency notched (Hz) when a BIDS recording's sidecar does not
  give ``PowerLineFrequency`` (which wins, as in pretraining: the cleaning config, and its
  hash, stay those of pretraining); for a list of files it stands in for the sidecar.
* channel fixes as in the catalog: ``montage``, ``rename``, ``exclude``, ``reference``.
* ``split``: ``kfold`` (cross-subject folds, ``folds`` of them) or ``official`` (the dataset's
  own train/eval split, TUAB/TUEV). ``seed``: the fold seed.
* ``status``: ``checked`` (built and tested here on real files), ``transcribed`` (copied from
  the spec/official code, not yet run on the real dataset) or ``uncertain`` (something is
  not known; ``uncertain`` says what). ``note``: free text.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

LABEL_KINDS = ("events", "participants", "table", "tuab", "tuev")
EVENT_SOURCES = ("auto", "bids", "annotations", "stim")
SPLITS = ("kfold", "official")
STATUSES = ("checked", "transcribed", "uncertain")
MODALITIES = ("eeg", "meg", "emeg")
_FIX_KEYS = ("montage", "rename", "exclude", "reference")
MAX_WINDOW_S = 120.0


@dataclass(frozen=True)
class Recipe:
    """One validated downstream recipe (see the module docstring for the fields)."""

    name: str
    classes: tuple[str, ...]
    labels: str
    window_s: float
    dataset: str = ""
    version: str = ""
    modality: str = "eeg"
    label_map: tuple[tuple[str, str], ...] = ()
    label_map_by_run: tuple[tuple[int, tuple[tuple[str, str], ...]], ...] = ()
    label_column: str = ""
    label_key: str = "subject"  # label tables: "subject" or "recording" (relative path)
    event_source: str = "auto"
    event_column: str = "trial_type"
    tmin_s: float = 0.0
    stride_s: float | None = None
    line_freq: float | None = None
    montage: str = ""
    rename: tuple[tuple[str, str], ...] = ()
    exclude: tuple[str, ...] = ()
    reference: str = ""
    split: str = "kfold"
    folds: int = 5
    seed: int = 42
    status: str = "transcribed"
    uncertain: str = ""
    note: str = ""

    @property
    def stride(self) -> float:
        return self.window_s if self.stride_s is None else self.stride_s

    @property
    def event_locked(self) -> bool:
        return self.labels in ("events", "tuev")

    def map_label(self, raw: str, run: int | None = None) -> int | None:
        """Class index of a raw label value (in run ``run`` for recipes with
        ``label_map_by_run``), or ``None`` when the recipe drops it."""
        raw = str(raw).strip()
        if self.label_map_by_run:
            cls = dict(dict(self.label_map_by_run).get(run, ())).get(raw)
        elif self.label_map:
            cls = dict(self.label_map).get(raw)
        else:
            cls = raw if raw in self.classes else None
        return None if cls is None else self.classes.index(cls)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return json.loads(json.dumps(d))

    @property
    def hash(self) -> str:
        """sha256 over every field (canonical JSON), first 16 hex digits."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def fixes_json(self, base_dir: str | Path | None = None) -> str:
        """The recipe's channel fixes as :class:`~brainomni.sensors.fixes.ChannelFixes` JSON
        (what ``RecordingRef.fixes`` holds); ``""`` when there are none."""
        from ..sensors.fixes import ChannelFixes

        entry = {
            "montage": self.montage,
            "rename": dict(self.rename),
            "exclude": list(self.exclude),
            "reference": self.reference,
        }
        return ChannelFixes.from_entry(entry, f"recipe {self.name!r}", base_dir).to_json()


_FIELDS = {
    "name": str,
    "dataset": str,
    "version": str,
    "modality": str,
    "classes": list,
    "labels": str,
    "label_map": dict,
    "label_map_by_run": dict,
    "label_column": str,
    "label_key": str,
    "event_source": str,
    "event_column": str,
    "window_s": (int, float),
    "tmin_s": (int, float),
    "stride_s": (int, float),
    "line_freq": (int, float),
    "montage": str,
    "rename": dict,
    "exclude": list,
    "reference": str,
    "split": str,
    "folds": int,
    "seed": int,
    "status": str,
    "uncertain": str,
    "note": str,
}
_REQUIRED = ("name", "classes", "labels", "window_s")


def recipe_from_dict(entry: dict[str, Any], where: str = "recipe") -> Recipe:
    """A :class:`Recipe` from one TOML table, every key and value checked."""
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: a recipe is a table of keys, got {type(entry).__name__}")
    name = entry.get("name")
    where = f"{where} {name!r}" if isinstance(name, str) and name else where
    unknown = sorted(set(entry) - set(_FIELDS))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; known keys: {sorted(_FIELDS)}")
    missing = [k for k in _REQUIRED if k not in entry]
    if missing:
        raise ValueError(f"{where}: missing required keys {missing}")
    for k, v in entry.items():
        want = _FIELDS[k]
        if isinstance(v, bool) or not isinstance(v, want):
            raise ValueError(f"{where}: {k} = {v!r} has the wrong type (expected {want})")

    def bad(msg: str) -> ValueError:
        return ValueError(f"{where}: {msg}")

    if not name or "/" in name or name.strip() != name:
        raise bad("name must be a plain non-empty name")
    classes = entry["classes"]
    if len(classes) < 2 or not all(isinstance(c, str) and c for c in classes):
        raise bad("classes must list at least two non-empty class names")
    if len(set(classes)) != len(classes):
        raise bad(f"classes {classes} repeat a name")
    if entry["labels"] not in LABEL_KINDS:
        raise bad(f"labels = {entry['labels']!r}; use one of {LABEL_KINDS}")
    label_map = entry.get("label_map", {})
    for k, v in label_map.items():
        if not isinstance(v, str) or v not in classes:
            raise bad(f"label_map[{k!r}] = {v!r} is not one of the classes {classes}")
    unused = sorted(set(classes) - set(label_map.values())) if label_map else []
    if unused:
        raise bad(f"classes {unused} receive no label in label_map")
    by_run = entry.get("label_map_by_run", {})
    runs: list[tuple[int, tuple[tuple[str, str], ...]]] = []
    for run, m in by_run.items():
        if not str(run).isdigit() or not isinstance(m, dict):
            raise bad(f"label_map_by_run: {run!r} must be a run number mapping to a table")
        for k, v in m.items():
            if not isinstance(v, str) or v not in classes:
                raise bad(f"label_map_by_run[{run!r}][{k!r}] = {v!r} is not one of {classes}")
        runs.append((int(run), tuple(sorted(m.items()))))
    if by_run:
        if label_map:
            raise bad("give label_map or label_map_by_run, not both")
        if entry["labels"] != "events":
            raise bad("label_map_by_run applies to labels = 'events' only")
        unused = sorted(set(classes) - {v for _, m in runs for _, v in m})
        if unused:
            raise bad(f"classes {unused} receive no label in label_map_by_run")
    window_s = float(entry["window_s"])
    if not 0 < window_s <= MAX_WINDOW_S or not math.isfinite(window_s):
        raise bad(f"window_s = {window_s} must be in (0, {MAX_WINDOW_S}] s")
    tmin_s = float(entry.get("tmin_s", 0.0))
    if not math.isfinite(tmin_s) or abs(tmin_s) > MAX_WINDOW_S:
        raise bad(f"tmin_s = {tmin_s} must be finite, within ±{MAX_WINDOW_S} s")
    stride = entry.get("stride_s")
    if stride is not None and not 0 < float(stride) <= MAX_WINDOW_S:
        raise bad(f"stride_s = {stride} must be in (0, {MAX_WINDOW_S}] s")
    line_freq = entry.get("line_freq")
    if line_freq is not None and not 1 <= float(line_freq) <= 1000:
        raise bad(f"line_freq = {line_freq} Hz is not a mains frequency (50 or 60)")
    for k, allowed in (
        ("modality", MODALITIES),
        ("event_source", EVENT_SOURCES),
        ("split", SPLITS),
        ("status", STATUSES),
        ("label_key", ("subject", "recording")),
    ):
        if k in entry and entry[k] not in allowed:
            raise bad(f"{k} = {entry[k]!r}; use one of {allowed}")
    labels = entry["labels"]
    if labels in ("participants", "table") and not entry.get("label_column"):
        raise bad(f"labels = {labels!r} needs label_column (the column holding the label)")
    if labels in ("tuab", "tuev") and entry.get("split", "kfold") != "official":
        raise bad(f"labels = {labels!r} comes with the official split: set split = 'official'")
    if "tmin_s" in entry and labels not in ("events", "tuev"):
        raise bad("tmin_s applies to event-locked windows only (labels = events or tuev)")
    folds = int(entry.get("folds", 5))
    if not 2 <= folds <= 100:
        raise bad(f"folds = {folds} must be in [2, 100]")
    if entry.get("status") == "uncertain" and not entry.get("uncertain"):
        raise bad("status = 'uncertain' needs an 'uncertain' text saying what is not known")
    for k in ("rename", "label_map"):
        if not all(isinstance(v, str) for v in entry.get(k, {}).values()):
            raise bad(f"{k} values must be strings")
    if not all(isinstance(x, str) and x for x in entry.get("exclude", [])):
        raise bad("exclude must list channel names")
    recipe = Recipe(
        name=name,
        classes=tuple(classes),
        labels=labels,
        window_s=window_s,
        dataset=entry.get("dataset", ""),
        version=entry.get("version", ""),
        modality=entry.get("modality", "eeg"),
        label_map=tuple(sorted((str(k), v) for k, v in label_map.items())),
        label_map_by_run=tuple(sorted(runs)),
        label_column=entry.get("label_column", ""),
        label_key=entry.get("label_key", "subject"),
        event_source=entry.get("event_source", "auto"),
        event_column=entry.get("event_column", "trial_type"),
        tmin_s=tmin_s,
        stride_s=None if stride is None else float(stride),
        line_freq=None if line_freq is None else float(line_freq),
        montage=entry.get("montage", ""),
        rename=tuple(sorted(entry.get("rename", {}).items())),
        exclude=tuple(entry.get("exclude", [])),
        reference=entry.get("reference", ""),
        split=entry.get("split", "kfold"),
        folds=folds,
        seed=int(entry.get("seed", 42)),
        status=entry.get("status", "transcribed"),
        uncertain=entry.get("uncertain", ""),
        note=entry.get("note", ""),
    )
    try:  # channel fixes checked like the catalog's (montage names, rename targets)
        recipe.fixes_json()
    except ValueError as exc:
        raise bad(str(exc)) from None
    return recipe


DEFAULT_RECIPES = Path(__file__).resolve().parents[2] / "manifests" / "downstream.toml"


def load_recipes(path: str | Path = DEFAULT_RECIPES) -> dict[str, Recipe]:
    """Every ``[[recipe]]`` of a TOML file, validated, by name."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        from ..errors import require

        tomllib = require("tomli", "ingest")  # type: ignore[assignment]

    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML ({exc}); fix the file") from None
    unknown = sorted(set(data) - {"recipe"})
    if unknown:
        raise ValueError(f"{path}: unknown top-level keys {unknown}; recipes are [[recipe]]")
    entries = data.get("recipe", [])
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: no [[recipe]] tables")
    out: dict[str, Recipe] = {}
    for i, entry in enumerate(entries):
        r = recipe_from_dict(entry, f"{path} recipe #{i + 1}")
        if r.name in out:
            raise ValueError(f"{path}: recipe {r.name!r} defined twice")
        out[r.name] = r
    return out


def get_recipe(name: str, path: str | Path = DEFAULT_RECIPES) -> Recipe:
    """The recipe ``name`` of ``path`` (default: the project's ``manifests/downstream.toml``)."""
    recipes = load_recipes(path)
    if name not in recipes:
        raise ValueError(f"no recipe {name!r} in {path}; known: {sorted(recipes)}")
    return recipes[name]
