"""Versioned dataset manifests: the corpus catalog, publish/verify/diff, dataset cards.

:mod:`.catalog` reads the ``[[dataset]]`` tables of ``manifests/catalog.toml``;
:mod:`.publish` builds, writes (immutably), verifies and compares manifests;
:mod:`.card` writes the Markdown dataset card and its plots.
"""
