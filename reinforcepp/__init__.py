"""reinforcepp: REINFORCE++ and its peers for language models, exact and fast, from a laptop CPU to GPUs."""

__version__ = "0.1.0"


def train(config, overrides=()):
    """Run RL training; returns the final model's directory. The same function as ``reinforcepp train``.

    ``config`` and ``overrides`` are what :func:`reinforcepp.config.load_config` takes: a Config, a preset name,
    a YAML path or a mapping; ``"dotted.key=value"`` strings or a ``{"dotted.key": value}`` mapping. Every
    config check runs first, before any model loads, also on a Config whose sections were edited after loading.
    """
    from reinforcepp.api import train as checked_train  # heavy imports only when training

    return checked_train(config, overrides)
