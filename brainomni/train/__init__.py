"""Pretraining both stages with DeepSpeed: recipes, trainer, checkpoints, export.

``brainomni.train.config`` and ``brainomni.train.export`` need only torch; the trainer
imports DeepSpeed when it starts.
"""
