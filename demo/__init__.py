"""``make demo`` (``python -m demo``): the whole job end to end on embedded defaults.

Not part of the importable library: the steps call :mod:`brainomni` like a user would.
:mod:`demo.bids` writes the small BIDS dataset, :mod:`demo.run` ingests, packs, publishes and
drives the rest, :mod:`demo.train` pretrains and reports, :mod:`demo.finetune` ends with the
planted-effect fine-tune next to its baselines.
"""
