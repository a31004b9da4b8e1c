"""Scene generator: seconds and peak RSS to write 2000^2, 8000^2 and 16000^2 scenes.

Target: peak RSS flat (within 20 %) across sizes, since the scene is written window by window.
Each size runs in its own process so the peak RSS is that size's alone.

    python benchmarks/bench_synth.py [--sizes 2000 8000 16000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import WORK, peak_rss_mb, run_child, save


def child(size: int) -> None:
    from kerinci_xr.synthetic import make_kerinci_scene

    out = WORK / f"synth_{size}"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    make_kerinci_scene(out, height=size, width=size, seed=0, radar=True, overwrite=True)
    secs = time.perf_counter() - t0
    mb = sum(p.stat().st_size for p in out.iterdir()) / 2**20
    shutil.rmtree(out, ignore_errors=True)
    print(
        json.dumps(
            {
                "size": size,
                "seconds": round(secs, 2),
                "peak_rss_mb": round(peak_rss_mb(), 1),
                "mpix_per_s": round(size * size / secs / 1e6, 2),
                "disk_mb": round(mb, 1),
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000, 16000])
    args = ap.parse_args()
    if args.child:
        child(args.sizes[0])
        return
    WORK.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in args.sizes:
        r = run_child(Path(__file__), "--sizes", str(size))
        rows.append(r)
        print(
            f"{size:>6}^2  {r['seconds']:>8.1f} s  {r['mpix_per_s']:>6.2f} Mpix/s  "
            f"peak RSS {r['peak_rss_mb']:>7.1f} MiB  files {r['disk_mb']:.0f} MiB"
        )
    rss = [r["peak_rss_mb"] for r in rows]
    growth = max(rss) / min(rss) - 1
    verdict = "PASS" if growth <= 0.20 else "FAIL"
    print(
        f"peak RSS growth from {args.sizes[0]}^2 to {args.sizes[-1]}^2: {100 * growth:.1f} % "
        f"(target <= 20 %): {verdict}"
    )
    save(
        "bench_synth",
        {"rows": rows, "rss_growth": round(growth, 3), "target": "<= 0.20", "verdict": verdict},
    )


if __name__ == "__main__":
    main()
