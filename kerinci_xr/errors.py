"""Exceptions raised by kerinci_xr: one base class, specific subclasses that also inherit builtins."""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "GridMismatchError",
    "InputFileNotFoundError",
    "InvalidInputError",
    "KerinciError",
    "LegendError",
    "NoWindowError",
    "OutputExistsError",
    "RasterReadError",
    "TrainingDivergedError",
]


class KerinciError(Exception):
    """Base class of every error kerinci_xr raises on purpose."""


class InputFileNotFoundError(KerinciError, FileNotFoundError):
    """An input file or store does not exist."""


class RasterReadError(KerinciError, ValueError):
    """A file exists but cannot be read as the raster it should be."""


class LegendError(KerinciError, ValueError):
    """The ``lc.json`` legend is malformed."""


class GridMismatchError(KerinciError, ValueError):
    """Two rasters that must share a grid (CRS, transform, shape) do not."""


class InvalidInputError(KerinciError, ValueError):
    """An argument or a configuration value is out of its allowed range."""


class NoWindowError(InvalidInputError):
    """No patch window fits anywhere in the labels (nodata, borders, split edges): nothing to sample."""


class OutputExistsError(KerinciError, FileExistsError):
    """An output exists already and ``overwrite`` was not requested."""


class CheckpointError(KerinciError, ValueError):
    """A checkpoint is unreadable, or does not match the data it is used with."""


class TrainingDivergedError(KerinciError, ArithmeticError):
    """Training produced a non-finite loss: its weights are not saved."""
