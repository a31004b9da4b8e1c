"""Patches: (a) extraction into the patch store vs reading each window through the lazy cube;
(b) patches/s into torch tensors with the project's loader vs a plain xbatcher BatchGenerator
(both its default of one patch per batch, and batches of 32 along the patch dimension).

On a generated 8000 x 8000 x 8 scene (cube chunks 1024 x 1024): 2,000 patches of 128 x 128.
Targets: (a) >= 10x; (b) >= 100x the plain xbatcher figure and >= 2,000 patches/s on 2 cores.
The per-window baseline of (a) is timed on a random subset of the same patches (it is slow)
and compared as patches per second. Every case runs in its own process (peak RSS its own).

    python benchmarks/bench_patches.py [--size 8000] [--patches 2000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import WORK, cube, peak_rss_mb, run_child, save


def cube_path(size: int) -> Path:
    return cube(size)


def manifest_path(size: int, n: int) -> Path:
    path = WORK / f"manifest_{size}_{n}.csv"
    if not path.exists():
        import warnings

        from kerinci_xr.cube import open_cube
        from kerinci_xr.sampling import sample_centres, write_manifest

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = sample_centres(
                open_cube(cube_path(size)), per_class=n, patch=128, seed=0, fractions=(1.0, 0.0, 0.0)
            )
        m = m.sample(n=min(n, len(m)), random_state=0).sort_values("patch_id")
        m["patch_id"] = range(len(m))
        write_manifest(m.reset_index(drop=True), path)
    return path


def store_path(size: int, n: int) -> Path:
    return WORK / f"patches_{size}_{n}.zarr"


def child(case: str, size: int, n: int) -> dict:
    from kerinci_xr.cube import open_cube
    from kerinci_xr.sampling import read_manifest

    m = read_manifest(manifest_path(size, n))
    out: dict = {"case": case}
    if case == "extract_store":
        from kerinci_xr.patches import write_patches

        path = store_path(size, n)
        shutil.rmtree(path, ignore_errors=True)
        t0 = time.perf_counter()
        write_patches(open_cube(cube_path(size)), m, path)
        out |= {"patches": len(m), "seconds": time.perf_counter() - t0}
    elif case == "extract_per_window":
        cube = open_cube(cube_path(size))
        sub = m.sample(n=min(150, len(m)), random_state=1)
        t0 = time.perf_counter()
        for r in sub.itertuples():
            win = {"y": slice(r.row_start, r.row_stop), "x": slice(r.col_start, r.col_stop)}
            cube["image"].isel(win).values, cube["labels"].isel(win).values, cube["valid"].isel(win).values
        out |= {"patches": len(sub), "seconds": time.perf_counter() - t0}
    elif case.startswith("loader"):
        from kerinci_xr.batching import make_loader

        workers = int(case.split("_w")[1])
        loader = make_loader(store_path(size, n), split="train", batch_size=32, num_workers=workers)
        epochs = []
        for e in range(3):
            loader.sampler.set_epoch(e)
            t0 = time.perf_counter()
            seen = sum(len(b["image"]) for b in loader)
            epochs.append(time.perf_counter() - t0)
        out |= {"patches": seen, "seconds": min(epochs[1:]), "first_epoch_s": epochs[0]}
    elif case.startswith("xbatcher"):
        import torch
        import xarray as xr
        import xbatcher

        ds = xr.open_zarr(store_path(size, n), consolidated=False)[["image", "labels"]]
        dims = {"band": ds.sizes["band"], "y": 128, "x": 128}
        if case == "xbatcher_batched":  # batches of 32 patches along the patch dimension
            gen = xbatcher.BatchGenerator(ds, input_dims=dims, batch_dims={"patch": 32})
            limit = 10
        else:  # xbatcher's default: one patch per batch
            gen = xbatcher.BatchGenerator(ds.isel(patch=slice(0, 200)), input_dims=dims)
            limit = 200
        t0 = time.perf_counter()
        seen = 0
        for i, batch in enumerate(gen):
            x = torch.from_numpy(batch["image"].values)
            torch.from_numpy(batch["labels"].values.astype("int64"))
            seen += x.shape[0] if x.ndim == 4 else 1
            if i + 1 >= limit:
                break
        out |= {"patches": seen, "seconds": time.perf_counter() - t0}
    out["patches_per_s"] = out["patches"] / out["seconds"]
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--case", default="extract_store")
    ap.add_argument("--size", type=int, default=8000)
    ap.add_argument("--patches", type=int, default=2000)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.case, args.size, args.patches)))
        return
    WORK.mkdir(parents=True, exist_ok=True)
    manifest_path(args.size, args.patches)  # cube and manifest made outside the timed children
    cases = [
        "extract_store",
        "extract_per_window",
        "loader_w0",
        "loader_w2",
        "xbatcher_per_patch",
        "xbatcher_batched",
    ]
    rows = {
        c: run_child(Path(__file__), "--case", c, "--size", str(args.size), "--patches", str(args.patches))
        for c in cases
    }
    for c, r in rows.items():
        print(
            f"{c:<20} {r['patches']:>6} patches {r['seconds']:>8.2f} s {r['patches_per_s']:>9.1f} patches/s"
            f"  peak RSS {r['peak_rss_mb']:>7.1f} MiB"
        )
    a = rows["extract_store"]["patches_per_s"] / rows["extract_per_window"]["patches_per_s"]
    best = max(rows["loader_w0"]["patches_per_s"], rows["loader_w2"]["patches_per_s"])
    b1 = best / rows["xbatcher_per_patch"]["patches_per_s"]
    b32 = best / rows["xbatcher_batched"]["patches_per_s"]
    checks = {
        "extract_speedup": (round(a, 1), ">= 10", a >= 10),
        "loader_vs_xbatcher_per_patch": (round(b1, 1), ">= 100", b1 >= 100),
        "loader_vs_xbatcher_batched": (round(b32, 1), ">= 100", b32 >= 100),
        "loader_patches_per_s": (round(best, 1), ">= 2000", best >= 2000),
    }
    for k, (v, t, ok) in checks.items():
        print(f"{k:<30} {v:>9}  target {t:<7} {'PASS' if ok else 'FAIL'}")
    save(
        "bench_patches",
        {
            "size": args.size,
            "rows": rows,
            "checks": {k: {"value": v, "target": t, "pass": ok} for k, (v, t, ok) in checks.items()},
        },
    )


if __name__ == "__main__":
    main()
