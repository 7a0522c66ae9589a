"""The sample format: one training sample as WebDataset tar members, written and read here.

Members of sample ``KEY`` (1-80 characters of ``[A-Za-z0-9_-]``: no dots, WebDataset splits
the extension at the first one; no slashes) in the two shard kinds (:data:`SCHEMAS`)::

    raw (brainomni.pack)      KEY.json             metadata (UTF-8 JSON object)
                              KEY.sensor_type.npy  (C,) int8: EEG 0, MAG 1, GRAD 2
                              KEY.sensors.npy      (C, 6) float32: position + orientation
                              KEY.signal.npy       (C, T) float16 (default) or float32
    tokens (brainomni.tokenize)
                              KEY.json             metadata (source key, recording, ...)
                              KEY.tokens.npy       (S, W, Q) int16 (or int32) codebook indices

One dtype set (:data:`SCHEMAS`) for writing and reading; ``.npy`` members are written with
``allow_pickle=False`` (little-endian, C order) and read by their checked header alone.
One module per job:

- :mod:`.schema`: members, keys, dtypes, the checked ``.npy`` header (:class:`SampleError`);
- :mod:`.write`: encoding and :class:`SampleWriter` (``webdataset.TarWriter`` with fixed
  member metadata: the same samples give byte-identical shards);
- :mod:`.read`: the checked streaming reader :func:`iter_samples` (sizes and headers before
  any allocation; why webdataset's own tar reader is not used is said there);
- :mod:`.decode`: members to arrays (:data:`DECODERS`, :func:`decode_sample`).

A user reads our shards with plain webdataset: ``webdataset.WebDataset(url).map(decode_sample)``
(or ``.decode()``: its ``npy`` decoder reads without pickles; never enable its
``pyd``/``pickle`` decoders on shards you did not write). Import from this package (its API,
below) or from the submodule that holds a name.
"""

from .decode import DECODERS, SCHEMA_OF, decode_meta, decode_raw, decode_sample, decode_tokens
from .read import LIMITS, Limits, Sample, count_samples, iter_samples
from .schema import (
    ANY_NPY,
    SCHEMAS,
    NpyRule,
    SampleError,
    npy_array,
    npy_load,
    parse_npy_header,
    sample_key,
    split_member,
    validate_key,
)
from .write import SampleWriter, encode_sample, encode_tokens, json_bytes, members, npy_bytes

__all__ = [
    "ANY_NPY",
    "DECODERS",
    "LIMITS",
    "SCHEMAS",
    "SCHEMA_OF",
    "Limits",
    "NpyRule",
    "Sample",
    "SampleError",
    "SampleWriter",
    "count_samples",
    "decode_meta",
    "decode_raw",
    "decode_sample",
    "decode_tokens",
    "encode_sample",
    "encode_tokens",
    "iter_samples",
    "json_bytes",
    "members",
    "npy_array",
    "npy_bytes",
    "npy_load",
    "parse_npy_header",
    "sample_key",
    "split_member",
    "validate_key",
]
