"""Storage I/O: :mod:`.fs` (filesystems and keys over fsspec, no credentials in options),
:mod:`.retry` (narrow retries of object-store calls, storage exit codes), :mod:`.redact`
(credentials out of logs and errors) and :mod:`.commit` (the one commit protocol: atomic
files, folders published marker-last). Import from the submodules; nothing heavy is
imported here."""
