"""Maps and quick-looks: static PNGs of composites and class maps (no display is ever shown)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from .legend import Legend

__all__ = ["class_map_png", "decimate", "false_colour_png"]


def decimate(obj: xr.DataArray, *, max_size: int = 2048) -> xr.DataArray:
    """Lazily subsample ``y``/``x`` with one stride so the longer side is at most ``max_size``."""
    step = max(1, int(np.ceil(max(obj.sizes["y"], obj.sizes["x"]) / max_size)))
    return obj.isel(y=slice(None, None, step), x=slice(None, None, step))


def _save_png(rgb: np.ndarray, path: str | Path) -> Path:
    from PIL import Image

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(rgb).save(tmp, format="PNG", optimize=True)
    tmp.replace(path)
    return path


def false_colour_png(
    image: xr.DataArray,
    path: str | Path,
    *,
    bands: Sequence[str] | None = None,
    percentiles: tuple[float, float] = (2.0, 98.0),
    max_size: int = 2048,
) -> Path:
    """Write a stretched false-colour composite (default NIR-SWIR1-SWIR2) as PNG.

    The percentile limits come from the whole scene (streamed); the picture is a strided
    subsample of at most ``max_size`` pixels on its longer side. Invalid pixels are black.
    """
    from .preprocess import false_colour

    rgb = false_colour(image, bands=bands, percentiles=percentiles)
    small = decimate(rgb, max_size=max_size).transpose("y", "x", "band").values
    small = np.nan_to_num(small, nan=0.0)
    return _save_png(np.rint(small * 255).astype(np.uint8), path)


def class_map_png(labels: xr.DataArray, legend: Legend, path: str | Path, *, max_size: int = 2048) -> Path:
    """Write a class map (training ids) in the legend's colours as PNG; nodata is black."""
    small = np.asarray(decimate(labels, max_size=max_size).values)
    lut = legend.rgb
    small = np.where(small <= legend.n_classes, small, 0)
    return _save_png(lut[small], path)
