"""reinforcepp: REINFORCE++ and its peers for language models, exact and fast, from a laptop CPU to GPUs."""

__version__ = "0.1.0"


def train(cfg):
    """Run RL training on a :class:`reinforcepp.config.Config`; returns the final model's directory.

    The same function as ``reinforcepp train --config FILE``.
    """
    from reinforcepp.train import train as _train  # heavy imports only when training

    return _train(cfg)
