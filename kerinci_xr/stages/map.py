"""``map``: linked interactive maps of a cube (and prediction) as standalone HTML, optional PNGs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .._locations import as_location
from .._options import option
from .._outputs import check_output, output_folder
from .._products import Kind
from ..cube import cube_legend, cube_view, open_cube
from ..legend import legend_of
from ..patches import open_patches
from ..prediction import open_prediction
from ..viz import class_map_png, error_png, false_colour_png, roles_of, save_html, scene_maps
from ._base import Context, Stage

__all__ = ["STAGE", "MapOptions"]


@dataclass(kw_only=True)
class MapOptions:
    cube: str = option(help="cube (.zarr)", positional=True, io="in", kind=Kind.CUBE)
    prediction: str | None = option(
        None, "prediction.zarr to show with its errors", io="in", kind=Kind.PREDICTION
    )
    patches: str | None = option(None, "patch store whose windows to draw", io="in", kind=Kind.PATCHES)
    band_roles: tuple[str, ...] | None = option(
        None, "band roles for the composite where the cube has none, e.g. nir=B4,swir1=B5,swir2=B7"
    )
    max_size: int = option(1000, "longest side of each map in pixels", ge=1)
    out: str = option(help="HTML file (works offline)", io="out", kind=Kind.MAP_PAGE, run_name="map.html")
    png: str | None = option(
        None, "also write static PNG quick-looks of the maps into this folder", io="out", kind=Kind.MAP_PNGS
    )
    overwrite: bool = option(False, "replace an existing page", pipeline=False)


def run(o: MapOptions, ctx: Context) -> dict[str, Any]:
    ds = cube_view(open_cube(o.cube))
    if o.band_roles:  # the composite on the page follows them too
        ds.attrs["band_roles"] = json.dumps(roles_of(ds, o.band_roles))
    pred = open_prediction(o.prediction)["classes"] if o.prediction is not None else None
    store = open_patches(o.patches) if o.patches is not None else None
    if o.png is not None:  # every PNG obeys the page's rule, checked before anything is written
        names = ["false_colour.png", "labels.png"]
        if pred is not None:
            names += ["prediction.png", "errors.png"]
        folder = output_folder(o.png)
        for name in names:
            check_output(folder / name, overwrite=o.overwrite)
    maps = scene_maps(ds, prediction=pred, patches=store, max_size=o.max_size)
    written: dict[str, Any] = {
        "map_page": save_html(maps, o.out, title=f"kerinci_xr map: {as_location(o.cube).name}")
    }
    if o.png is not None:
        size = 2 * o.max_size
        written["false_colour"] = false_colour_png(
            ds["image"], folder / "false_colour.png", max_size=size, roles=roles_of(ds, o.band_roles)
        )
        legend = cube_legend(ds) if ds.attrs.get("legend") else None
        if "labels" in ds and legend is not None:
            written["labels_png"] = class_map_png(
                ds["labels"], legend, folder / "labels.png", max_size=size, title="labels (reference)"
            )
        if pred is not None:
            plg = legend or legend_of(pred)
            written["prediction_png"] = class_map_png(
                pred, plg, folder / "prediction.png", max_size=size, title="prediction"
            )
            if "labels" in ds:
                written["errors_png"] = error_png(ds["labels"], pred, folder / "errors.png", max_size=size)
    return written


STAGE = Stage(
    "map",
    "interactive linked maps of a cube (and prediction) as standalone HTML",
    MapOptions,
    run,
    "kerinci-xr map cube.zarr --prediction prediction.zarr --patches patches.zarr --out map.html",
    args=("cube",),
)
