"""reinforcepp: REINFORCE++ and its peers for language models, exact and fast, from a laptop CPU to GPUs."""

import os as _os
import sys as _sys

__version__ = "0.1.0"

# PyTorch's CPU allocator backs tensors of 2 MB and up with transparent huge pages when this is set. A fresh
# 100 MB tensor then costs ~5x less to touch (page faults), and the update makes such tensors every step (the
# logits, the embedding's gradient). torch reads it once, at its first allocation: it only takes effect when
# reinforcepp is imported first (as by the CLI); a value set by the user wins.
if _sys.platform == "linux" and "torch" not in _sys.modules:
    _os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


def train(cfg):
    """Run RL training on a :class:`reinforcepp.config.Config`; returns the final model's directory.

    The same function as ``reinforcepp train --config FILE``.
    """
    from reinforcepp.train import train as _train  # heavy imports only when training

    return _train(cfg)
