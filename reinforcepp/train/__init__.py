"""The RL engine: experience, updates, the loop, checkpoints."""

import sys
import types

from .loop import train

__all__ = ["train"]


class _CallablePackage(types.ModuleType):
    """Importing this package makes it the attribute `train` of `reinforcepp`, in place of the API function
    `reinforcepp.train(config, overrides)`; so that `from reinforcepp import train` is that function whenever
    it runs (in a notebook, also after a first training), calling the package calls the API function."""

    def __call__(self, config, overrides=()):
        from reinforcepp.api import train as checked_train

        return checked_train(config, overrides)


sys.modules[__name__].__class__ = _CallablePackage
