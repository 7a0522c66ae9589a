"""BrainTokenizer and BrainOmni (NeurIPS 2025, arXiv 2505.18185), for any sensor layout.

Importing this subpackage imports torch; ``import brainomni`` does not.
"""

from brainomni.models.omni import BrainOmni, BrainOmniConfig
from brainomni.models.tokenizer import BrainTokenizer, TokenizerConfig

__all__ = ["BrainOmni", "BrainOmniConfig", "BrainTokenizer", "TokenizerConfig"]
