"""``synth``: write a Kerinci-like scene (Landsat, PALSAR, labels, lc.json), the embedded default."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._options import option
from ..synthetic import make_kerinci_scene, scene_files
from ._base import Context, Stage

__all__ = ["STAGE", "SynthOptions"]


@dataclass(kw_only=True)
class SynthOptions:
    out: str = option(help="output folder", io="out", kind="scene", run_name="scene")
    height: int = option(2751, "scene rows in pixels (the Kerinci export has 2751)")
    width: int = option(2692, "scene columns in pixels (the Kerinci export has 2692)")
    seed: int = option(0, "same seed, same bytes; another seed, another landscape")
    radar: bool = option(True, "also write the PALSAR file (HH, HV in dB x1e3 on another grid)")
    overwrite: bool = option(False, "replace the scene files if they exist", pipeline=False)


def _files(o: SynthOptions) -> dict[str, Path]:
    f = scene_files(o.out)
    files = {"image": f.landsat, "labels": f.labels, "legend": f.legend}
    return files | ({"radar": f.palsar} if o.radar else {})


def run(o: SynthOptions, ctx: Context) -> dict[str, Any]:
    make_kerinci_scene(
        o.out, height=o.height, width=o.width, seed=o.seed, radar=o.radar, overwrite=o.overwrite
    )
    return _files(o)


STAGE = Stage(
    "synth",
    "write a Kerinci-like scene (Landsat, PALSAR, labels, lc.json)",
    SynthOptions,
    run,
    "kerinci-xr synth --out scene --height 1500 --width 1500",
    args=("out",),
    extra_products=_files,
)
