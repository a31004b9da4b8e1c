"""``export``: a cube's imagery as a Cloud-Optimised GeoTIFF with its band names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .._options import option
from .._products import Kind
from ..cube import open_cube
from ..errors import InvalidInputError
from ..io import write_image_cog
from ._base import Context, DaskOptions, Stage

__all__ = ["STAGE", "ExportOptions"]


@dataclass(kw_only=True)
class ExportOptions(DaskOptions):
    cube: str = option(help="cube (.zarr)", positional=True, io="in", kind=Kind.CUBE)
    bands: tuple[str, ...] | None = option(None, "bands to export, comma-separated (default: all)")
    date: str | None = option(None, "the date to export from a cube with several (YYYY-MM-DD)")
    out: str = option(help="output GeoTIFF (COG)", io="out", kind=Kind.IMAGE_COG, run_name="image.tif")
    overwrite: bool = option(False, "replace an existing file", pipeline=False)


def run(o: ExportOptions, ctx: Context) -> dict[str, Any]:
    image = open_cube(o.cube)["image"]
    have = [str(b) for b in image["band"].values]
    if o.bands is not None:
        missing = [b for b in o.bands if b not in have]
        if missing:
            raise InvalidInputError(f"{o.cube}: bands {missing} are not in the cube (it has {have}).")
        image = image.sel(band=list(o.bands))
    if "time" in image.dims:
        if o.date is None:
            raise InvalidInputError(f"{o.cube}: the cube has several dates; choose one with --date.")
        image = image.sel(time=o.date)
    elif o.date is not None:
        raise InvalidInputError(f"{o.cube}: the cube has one date; --date does not apply.")
    return {"image_cog": write_image_cog(image, o.out, overwrite=o.overwrite)}


STAGE = Stage(
    "export",
    "write a cube's imagery as a Cloud-Optimised GeoTIFF with its band names",
    ExportOptions,
    run,
    "kerinci-xr export cube.zarr --bands B5,B6,B7 --out image.tif",
    args=("cube",),
)
