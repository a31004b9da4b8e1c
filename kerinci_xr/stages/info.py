"""``info``: grid, bands, valid share, and pixels and hectares per class of a cube."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import xarray as xr

from .._options import option
from .._products import Kind
from ..cube import cube_legend, cube_view, dates_of, open_cube
from ..metrics import class_areas
from ._base import Context, DaskOptions, Stage

__all__ = ["STAGE", "InfoOptions", "cube_summary"]


@dataclass(kw_only=True)
class InfoOptions(DaskOptions):
    cube: str = option(help="cube (.zarr)", positional=True, io="in", kind=Kind.CUBE)
    json: bool = option(False, "print JSON instead of a table")


def cube_summary(ds: xr.Dataset) -> dict[str, Any]:
    """Grid, bands, and (with labels) pixels and hectares per class: what ``info`` prints."""
    tr = ds.rio.transform()
    summary: dict[str, Any] = {
        "shape": {"y": ds.sizes["y"], "x": ds.sizes["x"]},
        "crs": ds.rio.crs.to_string(),
        "resolution": [abs(tr.a), abs(tr.e)],
        "bounds": list(ds.rio.bounds()),
        "bands": [str(b) for b in ds["band"].values],
        "band_roles": json.loads(ds.attrs.get("band_roles", "{}")),
        "chunks": {d: int(c[0]) for d, c in ds["image"].chunksizes.items()} if ds["image"].chunks else None,
        "date": ds.attrs.get("date") or None,
    }
    if "labels" in ds and ds.attrs.get("legend"):
        summary["classes"] = class_areas(ds["labels"], cube_legend(ds)).to_dict(orient="records")
    summary["valid_fraction"] = float(ds["valid"].mean().compute())
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as the table ``info`` prints."""
    lines = [
        f"grid      {summary['shape']['y']} x {summary['shape']['x']} (y x)   CRS {summary['crs']}",
        f"pixel     {summary['resolution'][0]:.6g} x {summary['resolution'][1]:.6g}",
        f"bounds    {', '.join(f'{b:.6f}' for b in summary['bounds'])}",
        f"bands     {', '.join(summary['bands'])}",
        f"chunks    {summary['chunks']}",
        f"valid     {100 * summary['valid_fraction']:.2f} % of pixels",
    ]
    if summary.get("dates"):
        lines.insert(
            4,
            f"dates     {', '.join(summary['dates'])} (figures of {summary['date'] or summary['dates'][0]})",
        )
    if "classes" in summary:
        lines.append(f"\n{'id':>3} {'code':>6}  {'class':<28} {'pixels':>12} {'hectares':>14} {'%':>7}")
        lines += [
            f"{r['class_id']:>3} {r['code']:>6}  {r['name'][:28]:<28} "
            f"{r['pixels']:>12,} {r['hectares']:>14,.1f} {r['percent']:>7.2f}"
            for r in summary["classes"]
        ]
    return "\n".join(lines)


def run(o: InfoOptions, ctx: Context) -> dict[str, Any]:
    cube = open_cube(o.cube)
    summary = cube_summary(cube_view(cube)) | ({"dates": dates_of(cube)} if dates_of(cube) else {})
    ctx.echo(json.dumps(summary, indent=2) if o.json else format_summary(summary))
    return {"summary": summary}


STAGE = Stage(
    "info",
    "grid, bands, class pixel counts and hectares of a cube",
    InfoOptions,
    run,
    "kerinci-xr info cube.zarr --json",
    args=("cube",),
)
