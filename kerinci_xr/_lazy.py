"""Package modules bound at the top of a module but run on first use (PyTorch's cost)."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

__all__ = ["lazy_module"]


def lazy_module(name: str) -> ModuleType:
    """The module ``name``: the loaded one if it is, else one that runs on its first attribute
    access (the standard library's :class:`importlib.util.LazyLoader`). The stages and the map
    readers bind the modules that import PyTorch (``training``, ``model``) this way, so that
    declaring options (``kerinci-xr --help``) and reading a map do not load it."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ImportError(f"no module named {name!r}")
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    parent, _, child = name.rpartition(".")
    if parent in sys.modules:
        setattr(sys.modules[parent], child, module)
    return module
