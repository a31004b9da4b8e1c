"""``sample``: N patch centres per class in spatial splits, extracted into a Zarr patch store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .._locations import as_location
from .._options import option
from .._products import Kind
from ..cube import cube_view, open_cube
from ..errors import InvalidInputError
from ..patches import write_patches
from ..sampling import SPLITS, Draw, SplitLayout, draw_centres, format_split_table, write_manifest
from ._base import Context, DaskOptions, Stage

__all__ = ["STAGE", "SampleOptions", "WindowOptions"]


@dataclass(kw_only=True)
class WindowOptions:
    """The cube and the windows cut from it: shared by ``sample`` and ``crossval``."""

    cube: str = option(help="cube (.zarr) with labels", positional=True, io="in", kind=Kind.CUBE)
    per_class: int = option(20, "centres per class and split", ge=1)
    patch: int = option(128, "window edge in pixels", ge=8)
    max_nodata: float = option(0.0, "largest invalid fraction of a window", ge=0, le=1)
    block: int | None = option(None, "split block edge in pixels (default 4 x patch)", ge=1)
    buffer: int = option(0, "extra pixels around windows kept in their split", ge=0)
    date: str | None = option(None, "a cube of several dates: the date to cut (default: the labels' date)")
    temporal: Literal["date", "stack"] = option(
        "date", "a cube of several dates: one date, or all stacked as bands"
    )


@dataclass(kw_only=True)
class SampleOptions(DaskOptions, WindowOptions):
    seed: int = option(0, "same seed, same centres and split layout", ge=0)
    fractions: tuple[float, ...] = option(
        (0.7, 0.15, 0.15), "train,val,test shares of the blocks", length=3, ge=0, le=1
    )
    split_by: Literal["auto", "labels", "area"] = option(
        "auto",
        "assign blocks to splits by labelled pixels per class (sparse labels reach every split) or by area "
        "(contiguous areas); auto: by labels when under half the valid pixels are labelled",
    )
    out: str = option(help="output patch store (.zarr)", io="out", kind=Kind.PATCHES, run_name="patches.zarr")
    manifest: str | None = option(
        None,
        "manifest CSV or .parquet (default: the store's name with .csv)",
        io="out",
        kind=Kind.MANIFEST,
        run_name="patches.csv",
    )
    overwrite: bool = option(False, "replace existing outputs", pipeline=False)


def _manifest_path(o: SampleOptions) -> Any:
    return as_location(o.manifest) if o.manifest is not None else as_location(o.out).with_suffix(".csv")


def sample_windows(
    ds: Any,
    o: WindowOptions,
    out: str | Path,
    *,
    seed: int,
    fractions: tuple[float, ...] = (0.7, 0.15, 0.15),
    stratify: bool | None = None,
    layout: SplitLayout | None = None,
    split: dict[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = False,
    echo: Any = None,
    every_split: bool = False,
) -> tuple[Draw, Any]:
    """Draw the centres (or use ``layout``) and write the patch store with its layout and table;
    ``every_split``: refuse, before writing, a draw that leaves a split of the fractions empty."""
    draw = draw_centres(
        ds,
        per_class=o.per_class,
        patch=o.patch,
        seed=seed,
        max_nodata=o.max_nodata,
        fractions=fractions,
        block=o.block,
        buffer=o.buffer,
        stratify=stratify,
        layout=layout,
    )
    if echo is not None:
        echo(format_split_table(draw.table))
    drawn = set(draw.manifest["split"]) if every_split else set(SPLITS)
    empty = [s for s, f in zip(SPLITS, fractions, strict=False) if f > 0 and s not in drawn]
    if empty:
        h, w = ds.sizes["y"], ds.sizes["x"]
        raise InvalidInputError(
            f"{o.cube}: the {' and '.join(empty)} split{'s' if len(empty) > 1 else ''} got no patch: the "
            f"{h} x {w} scene is cut into blocks of {4 * o.patch if o.block is None else o.block} pixels "
            f"({draw.layout.blocks.size} of them) shared by fractions {list(fractions)}, and no "
            f"{o.patch} x {o.patch} window fits in the {' and '.join(empty)} area. Fix: a smaller --patch "
            "(or --block), a larger scene, or --fractions with 0 for a split you do not need."
        )
    record = {
        "seed": seed,
        "fractions": [float(f) for f in fractions],
        "block": 4 * o.patch if o.block is None else o.block,
        "blocks": draw.layout.blocks.tolist(),
        "yedges": draw.layout.yedges.tolist(),
        "xedges": draw.layout.xedges.tolist(),
    } | (split or {})
    attrs = {
        "cube": str(o.cube),
        "split": record,
        "split_table": draw.table.to_dict("records"),
        "temporal": o.temporal,
        "date": ds.attrs.get("date", ""),
    }
    store = write_patches(ds, draw.manifest, out, overwrite=overwrite, progress=progress, attrs=attrs)
    return draw, store


def run(o: SampleOptions, ctx: Context) -> dict[str, Any]:
    """Draw the centres, extract the store and save the manifest; both outputs checked first."""
    manifest = _manifest_path(o)
    ds = cube_view(open_cube(o.cube), date=o.date, temporal=o.temporal)
    if "labels" not in ds:
        raise InvalidInputError(
            f"{o.cube}: the cube has no labels to sample from. Fix: prepare it with --labels."
        )
    draw, store = sample_windows(
        ds,
        o,
        o.out,
        seed=o.seed,
        fractions=o.fractions,
        stratify={"auto": None, "labels": True, "area": False}[o.split_by],
        split={"by": o.split_by},
        overwrite=o.overwrite,
        progress=ctx.progress,
        echo=ctx.echo,
        every_split=True,
    )
    table = draw.manifest
    return {"patches": store, "manifest": write_manifest(table, manifest)}


STAGE = Stage(
    "sample",
    "draw N patches per class in spatial splits into a Zarr patch store",
    SampleOptions,
    run,
    "kerinci-xr sample cube.zarr --per-class 20 --patch 128 --out patches.zarr",
    args=("cube",),
    extra_products=lambda o: {"manifest": _manifest_path(o)},
)
