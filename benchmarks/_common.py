"""Helpers shared by the benchmark scripts: child processes with peak RSS, scene cache, results."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:  # measure this checkout's kerinci_xr, whatever is installed
    sys.path.insert(1, str(HERE.parent))
WORK = Path(os.environ.get("KERINCI_BENCH_WORK", HERE / "_work"))
#: Where results are saved; the smoke run (``benchmarks/smoke.py``) points it elsewhere.
RESULTS = Path(os.environ.get("KERINCI_BENCH_RESULTS", HERE / "results"))


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(script: Path, *args: str) -> dict:
    """Run ``script --child ...`` in a fresh interpreter and return the JSON it prints last."""
    t0 = time.perf_counter()
    res = subprocess.run(
        [sys.executable, str(script), "--child", *args], capture_output=True, text=True, check=False
    )
    if res.returncode != 0:
        sys.stderr.write(res.stdout + res.stderr)
        raise SystemExit(f"benchmark child failed: {script.name} {' '.join(args)}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["process_wall_s"] = round(time.perf_counter() - t0, 2)
    return out


def scene(size: int, *, seed: int = 0, radar: bool = False) -> Path:
    """A cached generated scene of ``size`` x ``size`` pixels (generated once per machine)."""
    from kerinci_xr.synthetic import make_kerinci_scene

    folder = WORK / f"scene_{size}_{seed}{'_radar' if radar else ''}"
    if not (folder / "lc.json").exists():
        make_kerinci_scene(folder, height=size, width=size, seed=seed, radar=radar, overwrite=True)
    return folder


def save(name: str, payload: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    payload = {
        "benchmark": name,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "date": time.strftime("%Y-%m-%d %H:%M"),
        **payload,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"saved {path}")
    return path


def scaling_checks(name: str, baseline: dict, base: dict, big: dict, rows: list[dict]) -> None:
    """The three checks of a chunked path against a one-piece baseline, printed and saved with
    ``rows``: throughput >= 0.5x, peak RSS <= 1/4, peak RSS flat (within 20 %) at 4x the pixels."""
    speed = base["mpix_per_s"] / baseline["mpix_per_s"]
    mem = base["peak_rss_mb"] / baseline["peak_rss_mb"]
    flat = big["peak_rss_mb"] / base["peak_rss_mb"] - 1
    checks = {
        "throughput_ratio": (round(speed, 3), ">= 0.5", speed >= 0.5),
        "rss_ratio": (round(mem, 3), "<= 0.25", mem <= 0.25),
        "rss_growth_4x": (round(flat, 3), "<= 0.20", flat <= 0.20),
    }
    for k, (v, target, ok) in checks.items():
        print(f"{k:<16} {v:>7}  target {target:<7} {'PASS' if ok else 'FAIL'}")
    save(
        name,
        {
            "rows": rows,
            "checks": {k: {"value": v, "target": t, "pass": ok} for k, (v, t, ok) in checks.items()},
        },
    )


def cube(size: int, *, seed: int = 0, radar: bool = False, chunk: int = 1024) -> Path:
    """A cached prepared cube of a generated scene."""
    path = WORK / f"cube_{size}{'_radar' if radar else ''}.zarr"
    if not path.exists():
        from kerinci_xr.api import prepare

        folder = scene(size, seed=seed, radar=radar)
        prepare(
            folder / "Landsat_Kerinci_2023_v1.tif",
            labels=folder / "LC_Image_v1.tif",
            legend=folder / "lc.json",
            radar=(folder / "Palsar_Kerinci_2023_v1.tif") if radar else None,
            out=path,
            chunk=chunk,
        )
    return path


def random_checkpoint(cube_path: Path, out: Path, *, depth: int = 4, base: int = 32) -> Path:
    """A checkpoint of an untrained U-Net for the cube's bands (throughput does not need training)."""
    import torch

    from kerinci_xr.checkpoint import CHECKPOINT_FORMAT
    from kerinci_xr.cube import cube_legend, open_cube
    from kerinci_xr.model import UNetConfig, build_unet

    ds = open_cube(cube_path)
    legend = cube_legend(ds)
    bands = [str(b) for b in ds["band"].values]
    cfg = UNetConfig(in_channels=len(bands), n_classes=legend.n_classes, depth=depth, base=base)
    torch.manual_seed(0)
    net = build_unet(cfg).eval()
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "model_config": cfg.to_dict(),
            "bands": bands,
            "band_mean": [0.1] * len(bands),
            "band_std": [0.1] * len(bands),
            "legend": legend.to_dict(),
            "model_state": net.state_dict(),
            "history": [],
            "patch": 128,
            "epoch": 0,
            "best_miou": 0.0,
        },
        out,
    )
    return out
