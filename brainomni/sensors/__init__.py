"""Sensor tables: channel types from coil types, positions, orientations, EEG name matching.

Nothing here imports mne until a table is built or a montage is needed.
"""

from brainomni.sensors.coils import coil_class, meg_compensation_grade
from brainomni.sensors.names import match_montage, non_eeg_kind, normalize_eeg_name, resolve_names
from brainomni.sensors.table import build_sensor_table, sensor_table_json

__all__ = [
    "build_sensor_table",
    "coil_class",
    "match_montage",
    "meg_compensation_grade",
    "non_eeg_kind",
    "normalize_eeg_name",
    "resolve_names",
    "sensor_table_json",
]
