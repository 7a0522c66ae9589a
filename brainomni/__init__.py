"""BrainOmni: corpus engineering and pretraining for the unified EEG/MEG foundation model.

Importing this package is cheap: heavy dependencies (mne, zarr, ray, torch, s3fs) are
imported by the submodules that need them, at use.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "embed"]


def __getattr__(name: str):
    if name == "embed":  # torch and mne are imported when it is first asked for
        from .evaluation.embed import embed

        return embed
    raise AttributeError(f"module 'brainomni' has no attribute {name!r}")
