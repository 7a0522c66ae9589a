"""BIDS sidecars (JSON/TSV) read as untrusted input: bounded, decoded with a stated
fallback, parsed without guessing.

Decoding: UTF-8 (a leading byte-order mark is dropped; UTF-16 only with its byte-order
mark), and when that fails Latin-1, which maps every byte to a character, so a stray
``\\xff`` from a Windows editor never stops a crawl. The decoding used is recorded
(``encoding``: ``utf-8``, ``utf-8-bom``, ``utf-16`` or ``latin-1``): in the crawled recording's ``extra`` (``sidecar_encoding.<file>``) for
``channels.tsv``/``*_eeg.json``, and in the store's QC (``qc.sidecars``) for
``electrodes.tsv``/``coordsystem.json``. Text with NUL bytes is a binary file, not a
sidecar (:class:`SidecarError`, ``SidecarDecodeError``); so is one over
:data:`MAX_SIDECAR_BYTES`.

Electrode positions (:func:`load_electrodes`): ``EEGCoordinateUnits`` of the
``coordsystem.json`` beside ``electrodes.tsv`` must be one of BIDS' ``m``, ``cm``, ``mm``
(scaled to metres) or ``n/a``/absent, which leaves the file unused (units unknown; the
recording's positions then come from the data file or the 10-05 template, and the QC says
so). Any other unit is a failed recording (``BadCoordinateUnits``), as is a
``coordsystem.json`` that is not a JSON object (``BadSidecarJSON``). A row whose ``x``,
``y`` and ``z`` are all ``n/a`` is a channel without a measured position (BIDS allows it):
it takes the data file's or the template position and the QC counts the mix. A row with
any other non-number (text, ``inf``, ``nan``, a missing cell) is a failed recording
(``BadElectrodes``) naming the row and the channel: half-parsed files are not used.
Plausibility of the positions themselves (a head, not 85 m) is checked on the sensor table,
see :func:`brainomni.sensors.table.check_geometry`.
"""

from __future__ import annotations

import json
import math
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from brainomni.errors import RecordingFailed
from brainomni.io.redact import redact

MAX_SIDECAR_BYTES = 16 << 20  # a 10 000-channel channels.tsv is well under 1 MiB
UNIT_SCALE = {"m": 1.0, "cm": 1e-2, "mm": 1e-3}
UNKNOWN_UNITS = ("n/a", "")
# ``RecordingRef.extra`` keys a crawler uses to hand a per-recording sidecar problem to the
# worker, which turns it into the recording's failed ledger row (the crawl goes on).
CRAWL_ERROR_KEY = "crawl_error"
CRAWL_ERROR_CLASS_KEY = "crawl_error_class"
ENCODING_KEY_PREFIX = "sidecar_encoding."


class SidecarError(RecordingFailed):
    """A sidecar that cannot be used; ``error_class`` says how (see the module docstring)."""


def check_size(size: int, where: str) -> None:
    """Refuse a sidecar larger than :data:`MAX_SIDECAR_BYTES` (call before reading it)."""
    if size > MAX_SIDECAR_BYTES:
        raise SidecarError(
            f"{redact(where)}: {size} bytes, more than the {MAX_SIDECAR_BYTES} a sidecar "
            "may have; it is not a BIDS sidecar (replace it)",
            error_class="SidecarTooLarge",
        )


def decode(raw: bytes, where: str) -> tuple[str, str]:
    """``(text, encoding)`` of a sidecar's bytes; ``where`` names the file in errors."""
    check_size(len(raw), where)
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 with its byte-order mark
        try:
            text = raw.decode("utf-16")
        except UnicodeDecodeError:
            pass
        else:
            if "\x00" not in text:
                return text, "utf-16"
    if b"\x00" in raw:
        raise SidecarError(
            f"{redact(where)}: holds NUL bytes, so it is binary, not a JSON/TSV sidecar "
            "(a corrupt or misnamed file; replace it)",
            error_class="SidecarDecodeError",
        )
    if raw.startswith(b"\xef\xbb\xbf"):
        try:
            return raw[3:].decode("utf-8"), "utf-8-bom"
        except UnicodeDecodeError:
            pass
    else:
        try:
            return raw.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            pass
    return raw.decode("latin-1"), "latin-1"


def parse_json(text: str, where: str) -> dict[str, Any]:
    """A sidecar's JSON object; anything else is a :class:`SidecarError` naming the file."""
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise SidecarError(
            f"{redact(where)}: not valid JSON ({exc}); fix or remove the file",
            error_class="BadSidecarJSON",
        ) from None
    if not isinstance(value, dict):
        raise SidecarError(
            f"{redact(where)}: the JSON is a {type(value).__name__}, a sidecar must be an "
            "object ({...}); fix or remove the file",
            error_class="BadSidecarJSON",
        )
    return value


def parse_tsv(text: str) -> list[dict[str, str]]:
    """Rows of a BIDS TSV file (header line, tab-separated, no quoting); short rows padded.

    The csv module splits in C: ~5x faster than ``str.split`` per cell at 64+ rows, which
    counts when a crawl reads 200,000 ``channels.tsv`` files."""
    import csv

    lines = [ln for ln in text.splitlines() if ln.strip()]
    rows: list[dict[str, str]] = []
    if lines:
        table = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = [h.strip() for h in next(table)]
        width = len(header)
        for cells in table:
            cells = [c.strip() for c in cells[:width]]
            cells += [""] * (width - len(cells))
            rows.append(dict(zip(header, cells, strict=True)))
    return rows


def crawl_problem(extra: Any) -> RecordingFailed | None:
    """The failure a crawler recorded for a recording in its ``extra``, else ``None``."""
    found = dict(extra or ())
    if CRAWL_ERROR_KEY not in found:
        return None
    return SidecarError(
        str(found[CRAWL_ERROR_KEY]),
        error_class=str(found.get(CRAWL_ERROR_CLASS_KEY) or "SidecarError"),
    )


# --------------------------------------------------------------------------- electrodes


@dataclass
class Electrodes:
    """Positions read from one ``electrodes.tsv`` (metres) and how they were read."""

    positions: dict[str, list[float]]
    uri: str  # redacted
    coordsystem: str | None  # redacted URL of the coordsystem.json used
    units: str  # "m", "cm", "mm"; "n/a" when unknown (then ``positions`` is empty)
    encoding: str
    no_position: list[str] = field(default_factory=list)  # rows with x, y, z all n/a
    note: str = ""

    def qc(self) -> dict[str, Any]:
        return {
            "electrodes": self.uri,
            "coordsystem": self.coordsystem,
            "units": self.units,
            "encoding": self.encoding,
            "electrodes_used": len(self.positions),
            "electrodes_without_position": self.no_position[:64],
            **({"note": self.note} if self.note else {}),
        }


def _read_bytes(fs: Any, path: str, where: str) -> bytes:
    try:
        size = fs.size(path)
        check_size(int(size or 0), where)
        with fs.open(path, "rb") as fh:
            return fh.read(MAX_SIDECAR_BYTES + 1)
    except OSError as exc:
        from brainomni.io.retry import is_transient

        raise SidecarError(
            f"{redact(where)}: cannot be read ({type(exc).__name__}: {exc})",
            error_class="SidecarUnreadable",
            transient=is_transient(exc),
        ) from exc


def _coordsystem_path(fs: Any, path: str) -> str | None:
    """The ``coordsystem.json`` of an ``electrodes.tsv``: same stem first, then the same
    ``space-`` entity in the folder, then any in the folder (the crawler checked one exists)."""
    folder, name = posixpath.split(path)
    same = name[: -len("electrodes.tsv")] + "coordsystem.json"
    try:
        listed = sorted(p for p in fs.ls(folder, detail=False) if p.endswith("coordsystem.json"))
    except OSError:
        return None
    by_name = {posixpath.basename(p): p for p in listed}
    if same in by_name:
        return by_name[same]
    space = next((e for e in name.split("_") if e.startswith("space-")), None)
    for p in listed:
        if space is None or space in posixpath.basename(p).split("_"):
            return p
    return listed[0] if listed else None


def coordinate_units(coordsystem: Mapping[str, Any], where: str) -> str:
    """``m``/``cm``/``mm``, or ``n/a`` (unknown or absent); anything else fails."""
    value = coordsystem.get("EEGCoordinateUnits")
    if value is None:
        return "n/a"
    unit = str(value).strip()
    if unit.lower() in UNKNOWN_UNITS:
        return "n/a"
    if unit not in UNIT_SCALE and unit.lower() in UNIT_SCALE:
        unit = unit.lower()  # "MM": case is not worth a lost recording
    if unit not in UNIT_SCALE:
        raise SidecarError(
            f"{redact(where)}: EEGCoordinateUnits is {str(value)[:40]!r}; BIDS allows m, cm, "
            "mm or n/a. Fix the field (positions of a head are usually mm or m)",
            error_class="BadCoordinateUnits",
        )
    return unit


def _coordinate(value: str) -> float | None:
    """A finite coordinate, ``None`` for ``n/a``; raises ``ValueError`` for anything else."""
    if value.strip().lower() == "n/a":
        return None
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(value)
    return out


def load_electrodes(
    uri: str | None, storage_options: Mapping[str, Any] | None
) -> Electrodes | None:
    """The positions of a BIDS ``electrodes.tsv`` in metres, or ``None`` without one.

    Raises :class:`SidecarError` (a failed recording) as described in the module docstring.
    """
    if not uri:
        return None
    import fsspec

    where = redact(uri)
    try:
        fs, path = fsspec.core.url_to_fs(uri, **dict(storage_options or {}))
    except (ValueError, ImportError) as exc:
        raise SidecarError(
            f"{where}: cannot open this URL: {exc}", error_class="SidecarUnreadable"
        ) from exc
    text, encoding = decode(_read_bytes(fs, path, where), where)
    cs_path = _coordsystem_path(fs, path)
    cs_where = ""
    if cs_path is not None:
        cs_where = redact(fs.unstrip_protocol(cs_path) if "://" in uri else cs_path)
    units, note = "n/a", "no coordsystem.json beside it"
    if cs_path is not None:
        cs_text, _ = decode(_read_bytes(fs, cs_path, cs_where), cs_where)
        units = coordinate_units(parse_json(cs_text, cs_where), cs_where)
        note = "EEGCoordinateUnits is n/a or absent" if units == "n/a" else ""
    rows = parse_tsv(text)
    if rows and not {"name", "x", "y", "z"} <= set(rows[0]):
        raise SidecarError(
            f"{where}: the header lacks name, x, y and z columns (has "
            f"{', '.join(list(rows[0])[:8])}); fix the file",
            error_class="BadElectrodes",
        )
    out = Electrodes({}, where, cs_where or None, units, encoding, note=note)
    if units == "n/a":
        if note:
            out.note = f"{note}: positions unused, units unknown"
        return out
    scale = UNIT_SCALE[units]
    for line, row in enumerate(rows, start=2):
        name = row.get("name", "")
        cells = [row.get(k, "") for k in ("x", "y", "z")]
        try:
            xyz = [_coordinate(c) for c in cells]
        except ValueError:
            raise SidecarError(
                f"{where}: line {line} (channel {name[:40]!r}) has x, y, z = "
                f"{', '.join(repr(c[:20]) for c in cells)}; each must be a finite number or "
                "n/a. Fix the row (or set all three to n/a when the position is unknown)",
                error_class="BadElectrodes",
            ) from None
        if not name:
            continue
        if all(v is None for v in xyz):
            out.no_position.append(name)
        elif any(v is None for v in xyz):
            raise SidecarError(
                f"{where}: line {line} (channel {name[:40]!r}) has some coordinates n/a and "
                "some not; give all three or none",
                error_class="BadElectrodes",
            )
        else:
            out.positions[name] = [float(v) * scale for v in xyz]  # type: ignore[operator]
    return out
