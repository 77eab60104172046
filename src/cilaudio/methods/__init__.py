"""Continual-learning method mechanisms, one module each, found by name from the config.

:mod:`.registry` holds the interface (:class:`~.registry.Mechanism`) and the registry; every
other module of this package declares one mechanism and registers it. All of them are imported
here, so a new module is found without a list to edit (``docs/adding-a-method.md``).
"""

from __future__ import annotations

import importlib
import pkgutil

from .registry import *  # noqa: F403 - the registry's API is the package's
from .registry import __all__  # noqa: F401

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module != "registry":
        importlib.import_module(f"{__name__}.{_module}")
