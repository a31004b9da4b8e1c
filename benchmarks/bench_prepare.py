"""prepare (scale, remap, write Zarr): the lazy chunked path vs the eager in-memory baseline.

Baseline: what the original notebook did - read the whole scene with rasterio into numpy,
scale, mask and remap in memory, then write the same Zarr v3 store. Lazy: ``kerinci_xr``'s
``prepare`` (dask, threads, 1024 x 1024 chunks). Each case runs in its own process, so each peak
RSS is that case's alone. Targets: lazy throughput >= 0.5x eager, lazy peak RSS <= 1/4 of eager,
lazy peak RSS flat (within 20 %) when the scene grows 4x.

    python benchmarks/bench_prepare.py [--size 8000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import WORK, peak_rss_mb, run_child, scaling_checks, scene


def eager(folder: Path, out: Path) -> None:
    """The baseline: everything in memory with rasterio and numpy."""
    import numpy as np
    import rasterio
    import xarray as xr

    from kerinci_xr.cube import _encoding
    from kerinci_xr.legend import read_legend

    legend = read_legend(folder / "lc.json")
    with rasterio.open(folder / "Landsat_Kerinci_2023_v1.tif") as src:
        raw = src.read()
        transform, crs = src.transform, src.crs
    with rasterio.open(folder / "LC_Image_v1.tif") as src:
        codes = src.read(1)
    valid = (raw != 0).all(axis=0)
    image = raw.astype(np.float32) * np.float32(1e-4)
    image[:, ~valid] = np.nan
    del raw
    lut = legend.lut
    labels = np.where(codes < lut.size, lut[np.minimum(codes, lut.size - 1)], 0).astype(np.uint8)
    h, w = codes.shape
    ds = xr.Dataset(
        {
            "image": (("band", "y", "x"), image),
            "labels": (("y", "x"), labels),
            "valid": (("y", "x"), valid),
        },
        coords={
            "band": ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B9"],
            "y": transform.f + (np.arange(h) + 0.5) * transform.e,
            "x": transform.c + (np.arange(w) + 0.5) * transform.a,
        },
    ).rio.write_crs(crs)
    enc = _encoding(ds, 3, 3)
    enc["image"]["chunks"] = (8, 1024, 1024)
    enc["labels"]["chunks"] = enc["valid"]["chunks"] = (1024, 1024)
    ds.to_zarr(out, mode="w", zarr_format=3, consolidated=False, encoding=enc)


def lazy(folder: Path, out: Path) -> None:
    from kerinci_xr.api import prepare

    prepare(
        folder / "Landsat_Kerinci_2023_v1.tif",
        labels=folder / "LC_Image_v1.tif",
        legend=folder / "lc.json",
        out=out,
        chunk=1024,
        overwrite=True,
    )


def child(case: str, size: int) -> None:
    folder = scene(size)
    out = WORK / f"prepare_{case}_{size}.zarr"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    (eager if case == "eager" else lazy)(folder, out)
    secs = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    print(
        json.dumps(
            {
                "case": case,
                "size": size,
                "seconds": round(secs, 2),
                "mpix_per_s": round(size * size / secs / 1e6, 2),
                "peak_rss_mb": round(peak_rss_mb(), 1),
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--case", default="lazy")
    ap.add_argument("--size", type=int, default=8000, help="edge of the base scene (default 8000)")
    args = ap.parse_args()
    if args.child:
        child(args.case, args.size)
        return
    WORK.mkdir(parents=True, exist_ok=True)
    big = args.size * 2  # 4x the pixels
    for s in (args.size, big):
        scene(s)  # generate outside the timed children
    rows = [
        run_child(Path(__file__), "--case", "eager", "--size", str(args.size)),
        run_child(Path(__file__), "--case", "lazy", "--size", str(args.size)),
        run_child(Path(__file__), "--case", "lazy", "--size", str(big)),
    ]
    for r in rows:
        print(
            f"{r['case']:>6} {r['size']:>6}^2  {r['seconds']:>7.1f} s  {r['mpix_per_s']:>6.2f} Mpix/s"
            f"  peak RSS {r['peak_rss_mb']:>8.1f} MiB"
        )
    scaling_checks("bench_prepare", *rows, rows)


if __name__ == "__main__":
    main()
