"""kerinci_xr: pixel-wise land-cover classification from multispectral imagery on xarray + Dask."""

from importlib.metadata import PackageNotFoundError, version

from .errors import (
    GridMismatchError,
    InputFileNotFoundError,
    InvalidInputError,
    KerinciError,
    LegendError,
    OutputExistsError,
    RasterReadError,
)
from .io import align_to, open_raster
from .legend import Legend, read_legend
from .preprocess import false_colour, remap_labels, scale_values
from .store import build_cube, open_cube, write_cube

try:
    __version__ = version("kerinci_xr")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = [
    "GridMismatchError",
    "InputFileNotFoundError",
    "InvalidInputError",
    "KerinciError",
    "Legend",
    "LegendError",
    "OutputExistsError",
    "RasterReadError",
    "__version__",
    "align_to",
    "build_cube",
    "false_colour",
    "open_cube",
    "open_raster",
    "read_legend",
    "remap_labels",
    "scale_values",
    "write_cube",
]
