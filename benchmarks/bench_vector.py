"""Vector labels: rasterising points and polygons chunk by chunk vs one piece in memory.

1,000,000 labelled points and 100,000 polygons (GeoParquet, 5 classes) over a 16000 x 16000
grid (30 m, UTM), and a 32000 x 32000 grid (4x the pixels, the same number of features) for
the chunked path. Baseline: a one-piece ``rasterio.features.rasterize`` in memory of the same
two layers the toolkit makes (class ids, uint8, and feature numbers, int32), points and
polygons in one call. Chunked: ``kerinci_xr.vector.read_reference`` (reprojection, checks,
the overlap report) and ``rasterize_reference`` (1024 x 1024 chunks, conflicts of different
classes left unlabelled), computed with dask threads. Both read the file and reduce each layer
to per-class pixel counts, so neither keeps more than it must. Each case runs in its own
process. Targets: chunked throughput >= 0.5x one-piece, chunked peak RSS <= 1/4 of one-piece,
chunked peak RSS flat (within 20 %) when the grid grows 4x.

    python benchmarks/bench_vector.py [--size 16000] [--points 1000000] [--polygons 100000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import WORK, peak_rss_mb, run_child, scaling_checks

ORIGIN = (300000.0, 9800000.0)  # UTM 47S, near Kerinci
RES = 30.0
CRS = "EPSG:32747"


def features(size: int, n_points: int, n_polygons: int) -> Path:
    """A cached GeoParquet of random labelled points and polygons (octagons, 60-600 m across)."""
    import geopandas as gpd
    import numpy as np
    import shapely

    path = WORK / f"vector_{size}_{n_points}_{n_polygons}.parquet"
    if path.exists():
        return path
    rng = np.random.default_rng(0)
    span = size * RES
    xy = rng.uniform(0, span, size=(n_points + n_polygons, 2)) + np.array([ORIGIN[0], ORIGIN[1] - span])
    geoms = shapely.points(xy)
    radius = rng.uniform(30, 300, n_polygons)
    geoms[n_points:] = shapely.buffer(geoms[n_points:], radius, quad_segs=2)
    gdf = gpd.GeoDataFrame({"lc": rng.integers(1, 6, n_points + n_polygons)}, geometry=geoms, crs=CRS)
    WORK.mkdir(parents=True, exist_ok=True)
    gdf.to_parquet(path)
    return path


def _legend():
    from kerinci_xr.legend import Legend

    return Legend(values=[1, 2, 3, 4, 5], labels=list("abcde"), palette=["FF0000"] * 5)


def onepiece(path: Path, size: int) -> dict:
    import geopandas as gpd
    import numpy as np
    import rasterio.features
    from affine import Affine

    gdf = gpd.read_parquet(path)
    tr = Affine(RES, 0, ORIGIN[0], 0, -RES, ORIGIN[1])
    ids = np.arange(1, len(gdf) + 1)
    classes = rasterio.features.rasterize(
        zip(gdf.geometry.values, gdf["lc"].to_numpy().tolist(), strict=True),
        out_shape=(size, size),
        transform=tr,
        dtype="uint8",
    )
    counts = np.bincount(classes.ravel(), minlength=6)
    del classes
    numbers = rasterio.features.rasterize(
        zip(gdf.geometry.values, ids.tolist(), strict=True),
        out_shape=(size, size),
        transform=tr,
        dtype="int32",
    )
    labelled = int((numbers > 0).sum())
    return {"class_pixels": counts.tolist(), "labelled_pixels": labelled}


def chunked(path: Path, size: int) -> dict:
    import dask
    import dask.array as da
    from affine import Affine

    from kerinci_xr.vector import rasterize_reference, read_reference

    tr = Affine(RES, 0, ORIGIN[0], 0, -RES, ORIGIN[1])
    feats = read_reference(path, "lc", crs=CRS, transform=tr, shape=(size, size), legend=_legend())
    chunks = da.core.normalize_chunks(1024, (size, size))
    labels, numbers = rasterize_reference(feats, chunks)
    from kerinci_xr.preprocess import blockwise_bincount

    with dask.config.set(scheduler="threads"):  # one pass: both layers come from the same tasks
        counts, labelled = dask.compute(blockwise_bincount(labels, 6), (numbers > 0).sum())
    return {
        "class_pixels": counts.tolist(),
        "labelled_pixels": int(labelled),
        "conflicting_pairs": feats.report["conflicting_pairs"],
    }


def child(case: str, size: int, n_points: int, n_polygons: int) -> None:
    path = features(size, n_points, n_polygons)
    t0 = time.perf_counter()
    res = (onepiece if case == "onepiece" else chunked)(path, size)
    secs = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "case": case,
                "size": size,
                "points": n_points,
                "polygons": n_polygons,
                "seconds": round(secs, 2),
                "mpix_per_s": round(size * size / secs / 1e6, 2),
                "peak_rss_mb": round(peak_rss_mb(), 1),
                **res,
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--case", default="chunked")
    ap.add_argument("--size", type=int, default=16000)
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--polygons", type=int, default=100_000)
    args = ap.parse_args()
    if args.child:
        child(args.case, args.size, args.points, args.polygons)
        return
    big = 2 * args.size
    for s in (args.size, big):
        features(s, args.points, args.polygons)  # generated outside the timed children
    n = ("--points", str(args.points), "--polygons", str(args.polygons))
    rows = [
        run_child(Path(__file__), "--case", "onepiece", "--size", str(args.size), *n),
        run_child(Path(__file__), "--case", "chunked", "--size", str(args.size), *n),
        run_child(Path(__file__), "--case", "chunked", "--size", str(big), *n),
    ]
    for r in rows:
        print(
            f"{r['case']:>9} {r['size']:>6}^2  {r['seconds']:>7.1f} s  {r['mpix_per_s']:>7.1f} Mpix/s  "
            f"peak RSS {r['peak_rss_mb']:>8.1f} MiB  labelled {r['labelled_pixels']:,}"
        )
    scaling_checks("bench_vector", *rows, rows)


if __name__ == "__main__":
    main()
