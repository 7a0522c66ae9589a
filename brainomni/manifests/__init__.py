"""Versioned dataset manifests: the corpus catalog, publish/verify/diff, dataset cards.

:mod:`.catalog` reads the ``[[dataset]]`` tables of ``manifests/catalog.toml``;
:mod:`.publish` builds and writes (immutably), :mod:`.verify` checks every shard and
:mod:`.diff` compares two versions of a manifest;
:mod:`.card` writes the Markdown dataset card and its plots.
"""
