"""kerinci_xr: pixel-wise land-cover classification from multispectral imagery on xarray + Dask.

``import kerinci_xr as kx`` gives the whole pipeline: the stage functions (``kx.prepare``,
``kx.sample``, ``kx.train``, ``kx.predict`` ...; the same options and defaults as the CLI and
pipeline files), the pipeline runner and the main objects. The data layer is imported at once;
the parts that need PyTorch or the stage layer load on first use, so the import stays fast.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from .cube import build_cube, cube_legend, open_cube, write_cube
from .errors import (
    CheckpointError,
    GridMismatchError,
    InputFileNotFoundError,
    InvalidInputError,
    KerinciError,
    LegendError,
    OutputExistsError,
    RasterReadError,
)
from .io import align_to, open_raster, write_cog
from .legend import Legend, read_legend
from .preprocess import false_colour, remap_labels, scale_values

try:
    __version__ = version("kerinci_xr")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

#: Names loaded on first use (they import torch, holoviews or the stage layer).
_LAZY = {
    "PatchDataset": "batching",
    "TrainConfig": "training",
    "TrainResult": "training",
    "UNet": "model",
    "UNetConfig": "model",
    "assess": "api",
    "change": "api",
    "crossval": "api",
    "design_sample": "api",
    "stratified_estimates": "accuracy",
    "evaluate": "api",
    "evaluate_prediction": "metrics",
    "evaluate_features": "metrics",
    "draw_centres": "sampling",
    "read_reference": "vector",
    "rasterize_reference": "vector",
    "export": "api",
    "fit": "training",
    "info": "api",
    "load_checkpoint": "checkpoint",
    "make_loader": "batching",
    "map": "api",
    "predict": "api",
    "predict_scene": "prediction",
    "prepare": "api",
    "quicklook": "api",
    "report": "api",
    "run_pipeline": "pipeline",
    "sample": "api",
    "sample_centres": "sampling",
    "suggest": "api",
    "synth": "api",
    "train": "api",
    "write_patches": "patches",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # loaded once; the module's namespace then holds it (as pdoc reads it)
        return value
    raise AttributeError(f"module 'kerinci_xr' has no attribute {name!r}")


__all__ = [
    "CheckpointError",
    "GridMismatchError",
    "InputFileNotFoundError",
    "InvalidInputError",
    "KerinciError",
    "Legend",
    "LegendError",
    "OutputExistsError",
    "PatchDataset",
    "RasterReadError",
    "TrainConfig",
    "TrainResult",
    "UNet",
    "UNetConfig",
    "__version__",
    "align_to",
    "assess",
    "build_cube",
    "change",
    "crossval",
    "cube_legend",
    "design_sample",
    "draw_centres",
    "evaluate",
    "evaluate_features",
    "evaluate_prediction",
    "export",
    "false_colour",
    "fit",
    "info",
    "load_checkpoint",
    "make_loader",
    "map",
    "open_cube",
    "open_raster",
    "predict",
    "predict_scene",
    "prepare",
    "quicklook",
    "rasterize_reference",
    "read_legend",
    "read_reference",
    "remap_labels",
    "report",
    "run_pipeline",
    "sample",
    "sample_centres",
    "scale_values",
    "stratified_estimates",
    "suggest",
    "synth",
    "train",
    "write_cog",
    "write_cube",
    "write_patches",
]
