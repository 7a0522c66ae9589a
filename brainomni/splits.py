"""Subject-level splits and the leakage check (spec §9.6).

A recording's split is a deterministic function of ``(namespace, subject)`` through a keyed
hash (HMAC-SHA256 with ``SplitConfig.key``): the same subject always lands in the same split,
on every machine and every run, whatever else is in the corpus. ``namespace`` is the dataset,
except for datasets that share participants (the HBN releases: ds004186 and ds005505-ds005512
hold the same children under the same ids), which share one namespace so a child cannot
land in train through one release and in test through another.

* The catalog's unseen-device datasets go to a split of their own each: ``unseen-<dataset>``.
* The catalog's downstream evaluation datasets are excluded (the pack drops them, counted).
* :func:`check_leakage` fails loudly when a subject or a recording is in two splits, or when
  a downstream dataset or a listed downstream subject is in a pretraining split.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

PRETRAIN_SPLITS = ("train", "val", "test")
UNSEEN_PREFIX = "unseen-"

DEFAULT_UNSEEN = ("ds005261", "ds005697")
DEFAULT_EXCLUDED = (
    "ds002778",  # PD31
    "ds004504",  # AD65
    "ds005234",  # ASD74
    "ds003568",  # MEG-MMI
    "ds006035",  # SomatoMotor
    "tuab",
    "tuh_eeg_abnormal",
    "tuev",
    "tuh_eeg_events",
)
HBN = ("ds004186",) + tuple(f"ds0055{n:02d}" for n in range(5, 13))
DEFAULT_NAMESPACES = tuple((d, "hbn") for d in HBN)


_VERSION_SUFFIX = re.compile(r"-v?\d+(\.\d+)*$")


@functools.lru_cache(maxsize=1 << 14)
def dataset_name(name: str) -> str:
    """Canonical dataset name: lower case, without a ``-X.Y.Z`` version suffix.

    Cached per distinct name: a corpus has a few hundred datasets and every recording asks
    (the regular expression per recording cost seconds at 200,000 recordings)."""
    return _VERSION_SUFFIX.sub("", name.strip().lower())


class LeakageError(RuntimeError):
    """A subject or recording in two splits, or evaluation data in pretraining."""


@dataclass(frozen=True)
class SplitConfig:
    """Fractions of subjects per pretraining split, the hash key, and the catalog's lists.

    Defaults: 85/10/5 (the paper's proportions, now by subject rather than by segment).
    """

    fractions: tuple[tuple[str, float], ...] = (("train", 0.85), ("val", 0.10), ("test", 0.05))
    key: str = "brainomni-splits-v1"
    unseen_datasets: tuple[str, ...] = DEFAULT_UNSEEN
    excluded_datasets: tuple[str, ...] = DEFAULT_EXCLUDED
    namespaces: tuple[tuple[str, str], ...] = DEFAULT_NAMESPACES  # (dataset, shared namespace)
    excluded_subjects: tuple[tuple[str, str], ...] = field(default=())  # (dataset, subject)

    def __post_init__(self) -> None:
        names = [n for n, _ in self.fractions]
        if not names or len(set(names)) != len(names):
            raise ValueError("SplitConfig.fractions needs distinct split names")
        for n, f in self.fractions:
            if not re.fullmatch(r"[a-z][a-z0-9_-]*", n) or n.startswith(UNSEEN_PREFIX):
                raise ValueError(f"SplitConfig.fractions: bad split name {n!r}")
            if not f >= 0:
                raise ValueError(f"SplitConfig.fractions: {n} has a negative fraction")
        if abs(sum(f for _, f in self.fractions) - 1.0) > 1e-9:
            raise ValueError("SplitConfig.fractions must sum to 1")
        if not self.key:
            raise ValueError("SplitConfig.key must be a non-empty string")
        both = {dataset_name(d) for d in self.unseen_datasets} & {
            dataset_name(d) for d in self.excluded_datasets
        }
        if both:
            raise ValueError(f"SplitConfig: {sorted(both)} both unseen-device and excluded")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def hash(self) -> str:
        import json

        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    # the lists as sets of canonical names, computed once per config (not per recording);
    # cached_property writes the instance __dict__ directly, which a frozen dataclass allows
    @functools.cached_property
    def _namespace_of(self) -> dict[str, str]:
        return dict(self.namespaces)

    @functools.cached_property
    def _excluded(self) -> frozenset[str]:
        return frozenset(dataset_name(d) for d in self.excluded_datasets)

    @functools.cached_property
    def _excluded_subjects(self) -> frozenset[tuple[str, str]]:
        return frozenset((dataset_name(d), s) for d, s in self.excluded_subjects)

    @functools.cached_property
    def _split_memo(self) -> dict[tuple[str, str], str | None]:
        """(dataset, subject) -> split, filled by :func:`assign_split` (a pure function of
        the config, which is frozen)."""
        return {}

    @functools.cached_property
    def _unseen(self) -> frozenset[str]:
        return frozenset(dataset_name(d) for d in self.unseen_datasets)

    def __getstate__(self) -> dict[str, Any]:
        # the cached values above (names starting with "_") are derived: never pickled or
        # copied (the split memo can hold a row per subject; a config goes to every worker)
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def namespace(self, dataset: str) -> str:
        ds = dataset_name(dataset)
        return self._namespace_of.get(ds, ds)

    def is_excluded(self, dataset: str, subject: str = "") -> bool:
        ds = dataset_name(dataset)
        return ds in self._excluded or (ds, subject) in self._excluded_subjects


def subject_unit(dataset: str, subject: str, key: str) -> float:
    """Uniform number in [0, 1) from HMAC-SHA256(key, namespace \\x1f subject)."""
    mac = _keyed(key).copy()  # the key schedule once per key, not per subject
    mac.update(f"{dataset}\x1f{subject}".encode())
    digest = mac.digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


@functools.lru_cache(maxsize=16)
def _keyed(key: str) -> hmac.HMAC:
    return hmac.new(key.encode(), digestmod=hashlib.sha256)


def assign_split(dataset: str, subject: str, config: SplitConfig) -> str | None:
    """The split of a ``(dataset, subject)``; ``None`` when the dataset is excluded.

    ``subject`` must be non-empty (use the recording id for recordings without one: each is
    then its own subject).
    """
    if not subject:
        raise ValueError("assign_split needs a subject (use the recording id when unknown)")
    # one answer per (dataset, subject), remembered on the config: a subject's recordings
    # (4 each in a typical corpus) ask again, and the HMAC was most of the cost
    memo = config._split_memo
    key = (dataset, subject)
    if key in memo:
        return memo[key]
    out = memo[key] = _assign(dataset, subject, config)
    return out


def _assign(dataset: str, subject: str, config: SplitConfig) -> str | None:
    ds = dataset_name(dataset)
    if config.is_excluded(ds, subject):
        return None
    if ds in config._unseen:
        return f"{UNSEEN_PREFIX}{ds}"
    u = subject_unit(config.namespace(ds), subject, config.key)
    acc = 0.0
    for name, frac in config.fractions:
        acc += frac
        if u < acc:
            return name
    return config.fractions[-1][0]


@dataclass(frozen=True, slots=True)
class Assignment:
    """One recording's place: what the leakage check looks at."""

    split: str
    dataset: str
    subject: str
    recording_id: str


def check_leakage(
    assignments: Iterable[Assignment],
    config: SplitConfig,
    *,
    downstream_subjects: Iterable[tuple[str, str]] = (),
) -> dict[str, Any]:
    """Raise :class:`LeakageError` listing every problem; a summary dict when clean.

    Problems: a subject (within its namespace) in two splits; a recording in two splits; a
    recording of an excluded (downstream) dataset, or of a listed downstream
    ``(dataset, subject)``, in any split; an unseen-device dataset outside its own split.
    """
    subj_splits: dict[tuple[str, str], set[str]] = defaultdict(set)
    rec_splits: dict[str, set[str]] = defaultdict(set)
    problems: list[str] = []
    listed = {(dataset_name(d), s) for d, s in downstream_subjects}
    unseen = config._unseen
    n = 0
    for a in assignments:
        n += 1
        ds = dataset_name(a.dataset)
        subj_splits[(config.namespace(ds), a.subject)].add(a.split)
        rec_splits[a.recording_id].add(a.split)
        if config.is_excluded(ds, a.subject) or (ds, a.subject) in listed:
            problems.append(
                f"downstream data in split {a.split!r}: dataset {ds} subject "
                f"{a.subject!r} recording {a.recording_id}"
            )
        if ds in unseen and a.split != f"{UNSEEN_PREFIX}{ds}":
            problems.append(f"unseen-device dataset {ds} in split {a.split!r}")
        if ds not in unseen and a.split.startswith(UNSEEN_PREFIX):
            problems.append(f"dataset {ds} in unseen-device split {a.split!r}")
    for (ns, subj), splits in sorted(subj_splits.items()):
        if len(splits) > 1:
            problems.append(f"subject {ns}/{subj} in splits {sorted(splits)}")
    for rec, splits in sorted(rec_splits.items()):
        if len(splits) > 1:
            problems.append(f"recording {rec} in splits {sorted(splits)}")
    if problems:
        shown = "\n  ".join(problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        raise LeakageError(f"leakage check failed ({len(problems)} problems):\n  {shown}{more}")
    return {"entries": n, "subjects": len(subj_splits), "ok": True}


def split_config_from_catalog(
    datasets: Iterable[Mapping[str, Any]], **overrides: Any
) -> SplitConfig:
    """A :class:`SplitConfig` whose unseen/excluded lists and namespaces come from catalog
    dataset entries (``role`` = pretrain | unseen | downstream, optional ``namespace``)."""
    unseen, excluded, ns = [], [], []
    for d in datasets:
        names = [d["accession"], *d.get("aliases", ())]
        role = d.get("role", "pretrain")
        if role == "unseen":
            unseen.append(dataset_name(d["accession"]))
        elif role == "downstream":
            excluded.extend(dataset_name(n) for n in names)
        if d.get("namespace"):
            ns.append((dataset_name(d["accession"]), d["namespace"]))
    kw: dict[str, Any] = {
        "unseen_datasets": tuple(sorted(set(unseen))),
        "excluded_datasets": tuple(sorted(set(excluded))),
        "namespaces": tuple(sorted(set(ns))),
    }
    kw.update(overrides)
    return SplitConfig(**kw)
