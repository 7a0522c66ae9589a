"""What every crawler returns, and the file-format vocabulary shared by the crawlers.

Format keys are the reader keys of ``brainomni.readers`` (one per MNE reader); a crawler
sets ``RecordingRef.format`` from the recording's suffix so readers never sniff remote files.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from brainomni.records import RecordingRef

# Single-file recordings: suffix -> reader key (``None``: the reader sniffs the content,
# e.g. ``.cnt`` is Neuroscan or ANT Neuro). Keys match brainomni.readers.formats.FORMATS.
FILE_FORMATS: dict[str, str | None] = {
    ".fif": "fif",
    ".edf": "edf",
    ".bdf": "bdf",
    ".gdf": "gdf",
    ".vhdr": "brainvision",
    ".set": "eeglab",
    ".cnt": None,
    ".con": "kit",
    ".sqd": "kit",
    ".lay": "persyst",
    ".nxe": "eximia",
    ".cdt": "curry",
}
# Folder recordings: suffix -> reader key. A BTi/4D recording is a folder without a suffix
# whose data file (``c,rfDC``...) becomes the uri; see bids.py.
FOLDER_FORMATS: dict[str, str] = {".ds": "ctf", ".mff": "egi_mff"}
BTI_FORMAT = "bti"
# Companions of a single-file recording (same stem): not recordings themselves.
COMPANIONS: dict[str, tuple[str, ...]] = {
    ".vhdr": (".eeg", ".vmrk"),
    ".set": (".fdt",),
    ".lay": (".dat",),
}
COMPANION_SUFFIXES = frozenset(s for v in COMPANIONS.values() for s in v)


@dataclass
class CrawlResult:
    """Recordings found in one source, and the files deliberately left out with their reasons.

    ``recordings`` and ``skipped`` are sorted by relative path, so two crawls of the same
    unchanged source are equal.
    """

    recordings: list[RecordingRef] = field(default_factory=list)
    skipped: list[tuple[RecordingRef, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.recordings.sort(key=lambda r: (r.dataset, r.relpath))
        self.skipped.sort(key=lambda s: (s[0].dataset, s[0].relpath))

    def __add__(self, other: CrawlResult) -> CrawlResult:
        return CrawlResult(self.recordings + other.recordings, self.skipped + other.skipped)

    def skip_counts(self) -> dict[str, int]:
        """Number of skipped entries per reason."""
        return dict(Counter(reason for _, reason in self.skipped))

    def summary(self) -> dict[str, object]:
        """Counts by modality and format, plus skips by reason (JSON-ready)."""
        return {
            "recordings": len(self.recordings),
            "by_modality": dict(Counter(r.modality or "unknown" for r in self.recordings)),
            "by_format": dict(Counter(r.format or "unknown" for r in self.recordings)),
            "bytes": sum(r.size or 0 for r in self.recordings),
            "skipped": self.skip_counts(),
        }


def suffix_of(name: str) -> str:
    """Lower-case extension of a file or folder name (``.ds``, ``.vhdr``, ``''``)."""
    dot = name.rfind(".")  # a crawl asks this of every listed file: string finds, no splits
    return name[dot:].lower() if dot > name.rfind("/") else ""
