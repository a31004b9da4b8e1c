"""Interactive class maps: seconds and HTML size for a 4000^2 and a 16000^2 scene.

The label raster of a generated scene is opened lazily, remapped to training ids and drawn
with kerinci_xr.viz.class_map (decimated by nearest neighbour to 1000 pixels a side, so the
legend's colours survive), then saved as standalone HTML. Baseline: the same map without
decimation for the small scene (every pixel sent to the browser). Targets: both under 10 s and
under 20 MB.

    python benchmarks/bench_maps.py [--sizes 4000 16000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import WORK, peak_rss_mb, run_child, save, scene


def child(size: int, max_size: int) -> dict:
    from kerinci_xr.io import open_raster
    from kerinci_xr.legend import read_legend
    from kerinci_xr.preprocess import remap_labels
    from kerinci_xr.viz import class_map, save_html

    folder = scene(size)
    t0 = time.perf_counter()
    legend = read_legend(folder / "lc.json")
    labels = remap_labels(
        open_raster(folder / "LC_Image_v1.tif", chunks=2048).isel(band=0, drop=True), legend
    )
    out = WORK / f"map_{size}_{max_size}.html"
    save_html(class_map(labels, legend, max_size=max_size), out)
    secs = time.perf_counter() - t0
    return {
        "size": size,
        "max_size": max_size,
        "seconds": secs,
        "html_mb": out.stat().st_size / 2**20,
        "peak_rss_mb": peak_rss_mb(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--sizes", type=int, nargs="+", default=[4000, 16000])
    ap.add_argument("--max-size", type=int, default=1000)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.sizes[0], args.max_size)))
        return
    WORK.mkdir(parents=True, exist_ok=True)
    for s in args.sizes:
        scene(s)
    rows = [
        run_child(Path(__file__), "--sizes", str(s), "--max-size", str(args.max_size)) for s in args.sizes
    ]
    rows.append(run_child(Path(__file__), "--sizes", str(args.sizes[0]), "--max-size", str(args.sizes[0])))
    for r in rows:
        print(
            f"{r['size']:>6}^2 shown at <= {r['max_size']:>5} px  {r['seconds']:>6.2f} s  "
            f"{r['html_mb']:>7.1f} MB  peak RSS {r['peak_rss_mb']:>7.1f} MiB"
        )
    checks = {f"{r['size']}_seconds": (round(r["seconds"], 2), "< 10", r["seconds"] < 10) for r in rows[:-1]}
    checks |= {f"{r['size']}_html_mb": (round(r["html_mb"], 2), "< 20", r["html_mb"] < 20) for r in rows[:-1]}
    for k, (v, t, ok) in checks.items():
        print(f"{k:<18} {v:>8}  target {t:<5} {'PASS' if ok else 'FAIL'}")
    save(
        "bench_maps",
        {
            "rows": rows,
            "baseline": "the small scene without decimation (last row)",
            "checks": {k: {"value": v, "target": t, "pass": ok} for k, (v, t, ok) in checks.items()},
        },
    )


if __name__ == "__main__":
    main()
