"""Signal processing: pure array functions (no I/O, no Ray, no logging setup).

- :mod:`.config`: the frozen, versioned cleaning configuration and its hash.
- :mod:`.design`: the single zero-phase filter (notch + band-pass) and the rational
  resampling ratio, designed once per recording.
- :mod:`.stream`: overlapping-block filtering + resampling in bounded memory.
- :mod:`.stats`: streaming per-channel statistics (Welch PSD, flat, clipping, line noise).
- :mod:`.bads`: bad-channel rules applied to those statistics.
- :mod:`.spatial`: interpolation of bad channels and EEG average reference.
"""
