"""Run every benchmark script once at a tiny size, so that none can rot (CI runs this).

The figures of a smoke run mean nothing and go to a temporary folder, never to ``results/``;
what it checks is that each script runs to the end and saves its results.

    python benchmarks/smoke.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"

#: Each script with arguments that make it small: (script, arguments, results it saves).
RUNS = [
    ("bench_synth.py", ["--sizes", "128", "256"], ["bench_synth"]),
    ("bench_prepare.py", ["--size", "256"], ["bench_prepare"]),
    ("bench_patches.py", ["--size", "512", "--patches", "40"], ["bench_patches"]),
    ("bench_vector.py", ["--size", "512", "--points", "2000", "--polygons", "200"], ["bench_vector"]),
    ("bench_maps.py", ["--sizes", "256", "512", "--max-size", "128"], ["bench_maps"]),
    (
        "bench_train.py",
        ["--size", "512", "--per-class", "2", "--epochs", "1", "--batch-size", "4", "--device", "cpu"],
        ["bench_train_cpu"],
    ),
    (
        "bench_train.py",
        [
            "--nproc",
            "1,2",
            "--size",
            "512",
            "--per-class",
            "2",
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--device",
            "cpu",
        ],
        ["bench_train_ddp_cpu"],
    ),
    (
        "bench_predict.py",
        ["--size", "256", "--depth", "2", "--base", "8", "--chunk", "128", "--device", "cpu"],
        ["bench_predict_cpu"],
    ),
    ("bench_cloud.py", ["--size", "256", "--depth", "2", "--base", "8"], ["bench_cloud"]),
    (
        "bench_active.py",
        ["--size", "200", "--seeds", "0", "--rounds", "1", "--add", "10", "--start", "5", "--trees", "5"],
        ["bench_active"],
    ),
    ("bench_uncertainty.py", ["--size", "256", "--epochs", "1", "--reps", "5"], ["bench_uncertainty"]),
    (
        "bench_accuracy.py",
        ["--epochs", "1", "--points", "20", "--per-class", "4", "--only", "nc_points"],
        ["bench_accuracy"],
    ),
]


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="kerinci-bench-smoke-"))
    env = os.environ | {
        "KERINCI_BENCH_WORK": str(tmp / "work"),
        "KERINCI_BENCH_RESULTS": str(tmp / "results"),
    }
    failed = []
    for script, args, saves in RUNS:
        if script == "bench_accuracy.py" and not (SHARED / "nc_landsat7").is_dir():
            print(f"skip {script}: ../shared/data is absent")
            continue
        t0 = time.perf_counter()
        res = subprocess.run(
            [sys.executable, str(HERE / script), *args], env=env, capture_output=True, text=True
        )
        missing = [s for s in saves if not (tmp / "results" / f"{s}.json").exists()]
        ok = res.returncode == 0 and not missing
        print(f"{'ok  ' if ok else 'FAIL'} {script} {' '.join(args)}  ({time.perf_counter() - t0:.0f} s)")
        if not ok:
            failed.append(script)
            sys.stdout.write(res.stdout[-3000:] + res.stderr[-3000:])
            if missing:
                print(f"  saved no {missing}")
    res = subprocess.run(  # the README table from these results
        [sys.executable, str(HERE / "summarize.py"), "--out", str(tmp / "README.md")],
        env=env,
        capture_output=True,
        text=True,
    )
    print(f"{'ok  ' if res.returncode == 0 else 'FAIL'} summarize.py")
    if res.returncode != 0:
        failed.append("summarize.py")
        sys.stdout.write(res.stdout[-3000:] + res.stderr[-3000:])
    print(f"{len(RUNS) + 1 - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
