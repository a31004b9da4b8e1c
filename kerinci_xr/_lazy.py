"""Package modules bound at the top of a module but imported on first use (PyTorch's cost)."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

__all__ = ["lazy_module"]


class _Deferred:
    """Stands for a module until an attribute is asked of it; then imports it (once)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)

    def __repr__(self) -> str:
        return f"<module {self._name!r}, imported on first use>"


def lazy_module(name: str) -> Any:
    """The module ``name``, imported when one of its attributes is first used. The stages and the
    map readers bind the modules that import PyTorch (``training``, ``model``) this way, so that
    declaring options (``kerinci-xr --help``) and reading a map do not load it. Unlike importlib's
    ``LazyLoader``, nothing half-loaded is put in ``sys.modules``: code that walks the loaded
    modules (torch's own import does) cannot set it off in the middle of another import."""
    return _Deferred(name)
