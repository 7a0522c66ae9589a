"""Evaluation of a pretrained model: labelled downstream windows, fine-tuning and frozen
probes under cross-subject folds, baselines, zero-shot reconstruction, embeddings."""
