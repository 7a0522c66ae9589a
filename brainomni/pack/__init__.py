"""Pack: cut recording stores into normalised windows and write WebDataset shards.

Modules: :mod:`.config` (profiles, QC rules), :mod:`.windows` (pure window maths),
:mod:`.plan` (frozen plan, shard boundaries), :mod:`.shards` (write one shard), :mod:`.run`
(plan → shards → index, any executor), :mod:`.stream` (read shards back with webdataset,
local or ``s3://``). The sample encoding (no pickles) is :mod:`brainomni.formats.sample`.
"""

from .config import PROFILES, PackConfig, QCConfig, get_profile

__all__ = ["PROFILES", "PackConfig", "QCConfig", "get_profile"]
