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
WORK = Path(os.environ.get("KERINCI_BENCH_WORK", HERE / "_work"))
RESULTS = HERE / "results"


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
