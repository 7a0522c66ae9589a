"""The on-disk formats, one module each: :mod:`.sample` (the sample tar codec: members,
dtypes, writing with webdataset's TarWriter, the checked streaming reader, decoders) and
:mod:`.manifest` (signal and token manifests: formats, the one content hash, the one reader)."""
