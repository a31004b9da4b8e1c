"""``quicklook``: false-colour (NIR-SWIR1-SWIR2) and class-map PNGs of a cube."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .._options import option
from .._outputs import check_output, output_folder
from .._products import Kind
from ..cube import cube_legend, cube_view, open_cube
from ..viz import class_map_png, false_colour_png, roles_of
from ._base import Context, Stage

__all__ = ["STAGE", "QuicklookOptions"]


@dataclass(kw_only=True)
class QuicklookOptions:
    cube: str = option(help="cube (.zarr)", positional=True, io="in", kind=Kind.CUBE)
    out: str = option(help="output folder", io="out", kind=Kind.QUICKLOOKS, run_name="quicklooks")
    band_roles: tuple[str, ...] | None = option(
        None, "band roles for the composite where the cube has none, e.g. nir=B4,swir1=B5,swir2=B7"
    )
    max_size: int = option(2048, "longest side of the PNGs in pixels", ge=1)
    percentiles: tuple[float, ...] = option(
        (2.0, 98.0), "stretch between these percentiles", length=2, ge=0, le=100
    )
    overwrite: bool = option(False, "replace PNGs that exist in the folder", pipeline=False)


def run(o: QuicklookOptions, ctx: Context) -> dict[str, Any]:
    """Write ``false_colour.png`` and, with labels, ``labels.png`` into the folder."""
    ds = cube_view(open_cube(o.cube))
    folder = output_folder(o.out)
    labels = "labels" in ds and bool(ds.attrs.get("legend"))
    pngs = [folder / "false_colour.png"] + ([folder / "labels.png"] if labels else [])
    for png in pngs:
        check_output(png, overwrite=o.overwrite)
    lo, hi = o.percentiles
    out = {
        "false_colour": false_colour_png(
            ds["image"], pngs[0], percentiles=(lo, hi), max_size=o.max_size, roles=roles_of(ds, o.band_roles)
        )
    }
    if labels:
        out["labels_png"] = class_map_png(
            ds["labels"], cube_legend(ds), pngs[1], max_size=o.max_size, title="labels (reference)"
        )
    return out


STAGE = Stage(
    "quicklook",
    "false-colour and class-map PNGs of a cube",
    QuicklookOptions,
    run,
    "kerinci-xr quicklook cube.zarr --out quicklooks",
    args=("cube",),
)
