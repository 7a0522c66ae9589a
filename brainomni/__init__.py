"""BrainOmni: corpus engineering and pretraining for the unified EEG/MEG foundation model.

Importing this package is cheap: heavy dependencies (mne, zarr, ray, torch, s3fs) are
imported by the submodules that need them, at use.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
