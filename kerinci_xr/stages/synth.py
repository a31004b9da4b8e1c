"""``synth``: write a Kerinci-like scene (Landsat, PALSAR, labels, lc.json), the embedded default."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .._locations import Location, is_url
from .._options import option
from .._products import Kind
from ..errors import InvalidInputError
from ..synthetic import make_kerinci_scene, make_kerinci_series, scene_files, stac_items_path, write_stac
from ._base import Context, Stage

__all__ = ["STAGE", "SynthOptions"]


@dataclass(kw_only=True)
class SynthOptions:
    out: str = option(help="output folder", io="out", kind=Kind.SCENE, run_name="scene")
    height: int = option(2751, "scene rows in pixels (the Kerinci export has 2751)", ge=16)
    width: int = option(2692, "scene columns in pixels (the Kerinci export has 2692)", ge=16)
    seed: int = option(0, "same seed, same bytes; another seed, another landscape", ge=0)
    radar: bool = option(
        True,
        "also write the PALSAR file (HH, HV in dB x1e3 on another grid)",
        off="write no PALSAR file (Landsat, labels and lc.json only)",
    )
    years: tuple[int, ...] | None = option(
        None,
        "one scene per year, the later ones with known change (e.g. 2015,2023); files named by year",
        ge=1900,
        le=2200,
    )
    points: int = option(
        0,
        "also write Sample_LC_v1.geojson: this many random reference points with the label map's code "
        "(field lc), like the study's 14,029 points",
        ge=0,
    )
    qa_pixel: bool = option(
        False,
        "also write Landsat_Kerinci_2023_v1_QA_PIXEL.tif, a Collection 2 style quality band (bits: 1 "
        "dilated cloud, 3 cloud, 6 clear) for prepare --mask ... --mask-kind qa_pixel",
    )
    stac: bool = option(
        False,
        "also write stac_items.json: a STAC ItemCollection of the Landsat scene(s), one GeoTIFF per band, "
        "for prepare --stac",
    )
    overwrite: bool = option(False, "replace the scene files if they exist", pipeline=False)


def _files(o: SynthOptions) -> dict[str, Location]:
    """The scene's files by kind; for a series, the first year's as the scene, every year's by year."""
    years = o.years or (None,)
    out: dict[str, Location] = {}
    for i, year in enumerate(years):
        f = scene_files(o.out, year)
        tag = "" if i == 0 else f"_{year}"
        out |= {f"image{tag}": f.landsat, f"labels{tag}": f.labels} | (
            {f"radar{tag}": f.palsar} if o.radar else {}
        )
        out |= ({f"qa_pixel{tag}": f.qa_pixel} if o.qa_pixel else {}) | (
            {f"reference_points{tag}": f.points} if o.points else {}
        )
    return out | {"legend": scene_files(o.out).legend} | ({"stac": stac_items_path(o.out)} if o.stac else {})


def run(o: SynthOptions, ctx: Context) -> dict[str, Any]:
    if o.stac and is_url(o.out):  # before any file is written
        raise InvalidInputError(
            f"{o.out}: --stac writes its items to a local folder. Fix: --out a local folder."
        )
    kw: dict[str, Any] = {
        "height": o.height,
        "width": o.width,
        "seed": o.seed,
        "radar": o.radar,
        "overwrite": o.overwrite,
        "points": o.points,
        "qa_pixel": o.qa_pixel,
    }
    if o.years:
        make_kerinci_series(o.out, list(o.years), **kw)
    else:
        make_kerinci_scene(o.out, **kw)
    if o.stac:
        write_stac(o.out, list(o.years) if o.years else None, overwrite=o.overwrite)
    return _files(o)


STAGE = Stage(
    "synth",
    "write a Kerinci-like scene (Landsat, PALSAR, labels, lc.json)",
    SynthOptions,
    run,
    "kerinci-xr synth --out scene --height 1500 --width 1500 --years 2015,2023",
    args=("out",),
    extra_products=_files,
)
