"""The ``[[dataset]]`` tables of the corpus catalog (``manifests/catalog.toml``).

The same file's ``[[source]]`` tables are read by :func:`brainomni.sources.load_catalog`
(crawlable sources); ``[[dataset]]`` tables describe every dataset of the corpus — the
pretraining sets, the unseen-device sets and the downstream sets kept out — with the fields
that manifests and dataset cards report (device, channels, sampling rate, subjects), and
the dataset's channel fixes (``montage``, ``rename``, ``exclude``, ``reference``,
``fix_note``; see :mod:`brainomni.sensors.fixes`), which the ingest applies to every
recording of the dataset before its sensor table is built. Unknown keys, malformed fixes and
unknown montage names are errors naming the entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..sensors.fixes import FIX_KEYS, ChannelFixes
from ..splits import SplitConfig, dataset_name, split_config_from_catalog

ROLES = ("pretrain", "unseen", "downstream")
DEFAULT_CATALOG = Path(__file__).resolve().parents[2] / "manifests" / "catalog.toml"


@dataclass(frozen=True)
class DatasetInfo:
    """One dataset of the corpus. ``channels`` and ``sfreq`` (Hz) as the source describes."""

    accession: str
    name: str
    role: str
    modality: str
    version: str = ""
    device: str = "unknown"
    channels: int | None = None
    sfreq: float | None = None
    subjects: int | None = None
    format: str = ""
    url: str = ""
    namespace: str = ""
    aliases: tuple[str, ...] = ()
    paper_index: int | None = None
    uncertain: tuple[str, ...] = ()
    note: str = ""
    fixes: ChannelFixes = field(default_factory=ChannelFixes)
    extra: dict[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not self.accession:
            raise ValueError("DatasetInfo.accession must be non-empty")
        if self.role not in ROLES:
            raise ValueError(f"DatasetInfo {self.accession}: role must be one of {ROLES}")
        if self.modality not in ("eeg", "meg", "emeg"):
            raise ValueError(f"DatasetInfo {self.accession}: modality must be eeg, meg or emeg")

    @property
    def key(self) -> str:
        return dataset_name(self.accession)


class Catalog:
    """Datasets by canonical name (accession or alias)."""

    def __init__(self, datasets: list[DatasetInfo]) -> None:
        self.datasets = datasets
        self._by: dict[str, DatasetInfo] = {}
        for d in datasets:
            for n in (d.accession, *d.aliases):
                k = dataset_name(n)
                if k in self._by:
                    raise ValueError(f"catalog lists dataset {k!r} twice")
                self._by[k] = d

    def get(self, name: str) -> DatasetInfo | None:
        return self._by.get(dataset_name(name)) if name else None

    def device(self, name: str) -> str:
        d = self.get(name)
        return d.device if d else "unknown"

    def split_config(self, **overrides: Any) -> SplitConfig:
        """Split config whose unseen/excluded/namespace lists come from this catalog."""
        rows = [
            {
                "accession": d.accession,
                "aliases": d.aliases,
                "role": d.role,
                "namespace": d.namespace,
            }
            for d in self.datasets
        ]
        return split_config_from_catalog(rows, **overrides)


def _load_toml(path: str | Path) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        from ..errors import require

        tomllib = require("tomli", "ingest")  # type: ignore[assignment]
    with open(path, "rb") as f:
        return tomllib.load(f)


def datasets_from_entries(
    entries: list[Any], where: str | Path, base_dir: str | Path | None = None
) -> list[DatasetInfo]:
    """Validated :class:`DatasetInfo` objects of ``[[dataset]]`` tables.

    ``base_dir``: the folder custom montage files are relative to (the catalog's folder).
    An unknown key, a malformed field or fix, or an unknown montage is a ``ValueError``
    naming the catalog and the entry.
    """
    known = {f.name for f in fields(DatasetInfo)} - {"extra", "fixes"}
    out = []
    for i, entry in enumerate(entries):
        label = f"{where}: dataset entry {i + 1}"
        if not isinstance(entry, dict):
            raise ValueError(f"{label}: a [[dataset]] table is expected")
        label += f" ({entry.get('accession', '?')})"
        unknown = sorted(set(entry) - known - set(FIX_KEYS))
        if unknown:
            raise ValueError(
                f"{label}: unknown key(s) {unknown}; known: {sorted(known | set(FIX_KEYS))}"
            )
        kw = {k: v for k, v in entry.items() if k in known}
        for k in ("aliases", "uncertain"):
            if k in kw:
                kw[k] = tuple(kw[k])
        try:
            kw["fixes"] = ChannelFixes.from_entry(entry, label, base_dir)
            out.append(DatasetInfo(**kw))
        except (TypeError, ValueError) as exc:
            msg = str(exc)
            raise ValueError(msg if msg.startswith(label) else f"{label}: {msg}") from exc
    return out


def load_datasets(path: str | Path = DEFAULT_CATALOG) -> Catalog:
    """Read the ``[[dataset]]`` tables of a TOML catalog (see :func:`datasets_from_entries`)."""
    data = _load_toml(path)
    entries = data.get("dataset", [])
    if not isinstance(entries, list):
        raise ValueError(f"{path}: [[dataset]] entries must be an array of tables")
    return Catalog(datasets_from_entries(entries, path, Path(path).resolve().parent))
