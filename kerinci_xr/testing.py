"""Helpers for tests and benchmarks: a real Dask cluster of separate processes, optionally with
workers that see no disk of the client's (what a Kubernetes or dask-gateway cluster is)."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .accuracy import strata_estimates

__all__ = ["PRIVATE", "dask_processes", "private_namespaces", "strata_simulation", "with_errors"]

#: A command prefix: run the command in a mount namespace of its own where an empty tmpfs hides
#: the folder given as the next argument (``[*PRIVATE, folder, *command]``).
PRIVATE = [
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "--",
    "sh",
    "-c",
    'mount -t tmpfs kx "$0" && exec "$@"',
]


def private_namespaces(hide: str | Path) -> str | None:
    """``None`` when processes can be started with ``hide`` hidden from them, else why not."""
    if shutil.which("unshare") is None:
        return "unshare is not installed"
    probe = subprocess.run([*PRIVATE, str(hide), "test", "!", "-e", f"{hide}/.never"], capture_output=True)
    return None if probe.returncode == 0 else probe.stderr.decode(errors="replace").strip()[:200] or "refused"


@contextlib.contextmanager
def dask_processes(
    root: Path, *, hide: str | Path | None = None, workers: int = 2, memory_limit: str = "4GiB"
) -> Iterator[str]:
    """A ``dask scheduler`` and ``workers`` ``dask worker`` processes (one thread each), each
    started in its own folder under ``root`` (a relative path means nothing to them); with
    ``hide``, each in a mount namespace of its own that does not see that folder (``root`` must
    lie outside it). Yields the scheduler's address once every worker has joined."""
    from distributed import Client

    wrap = [*PRIVATE, str(hide)] if hide is not None else []
    info = root / "scheduler.json"
    procs: list[subprocess.Popen] = []
    log = open(root / "cluster.log", "w")
    try:
        scheduler = ["distributed.cli.dask_scheduler", "--scheduler-file", str(info), "--port", "0"]
        scheduler += ["--dashboard-address", ":0", "--host", "127.0.0.1"]
        procs.append(
            subprocess.Popen(
                [*wrap, sys.executable, "-m", *scheduler], cwd=root, stdout=log, stderr=subprocess.STDOUT
            )
        )
        for i in range(workers):
            home = root / f"worker{i}"
            home.mkdir()
            worker = ["distributed.cli.dask_worker", "--scheduler-file", str(info), "--nthreads", "1"]
            worker += ["--nworkers", "1", "--no-dashboard", "--memory-limit", memory_limit]
            worker += ["--local-directory", str(home), "--host", "127.0.0.1"]
            procs.append(
                subprocess.Popen(
                    [*wrap, sys.executable, "-m", *worker], cwd=home, stdout=log, stderr=subprocess.STDOUT
                )
            )
        while not info.exists() or not info.read_text().strip():  # the scheduler writes it once up
            if procs[0].poll() is not None:
                raise RuntimeError(f"the scheduler did not start: {(root / 'cluster.log').read_text()}")
            time.sleep(0.05)
        address = json.loads(info.read_text())["address"]
        with Client(address) as client:
            client.wait_for_workers(workers, timeout=300)
        yield address
    finally:
        for p in procs[::-1]:
            p.terminate()
        for p in procs:
            p.wait(timeout=60)
        log.close()


def strata_simulation(
    truth: Any,
    strata_map: Any,
    assessed: Any,
    *,
    n_classes: int,
    units: int,
    reps: int,
    seed: int = 0,
    min_share: float = 0.05,
) -> dict[str, dict[str, Any]]:
    """Repeated stratified samples of a population whose every value is known: strata from
    ``strata_map``, the map ``assessed`` estimated with Stehman (2014)'s estimators
    (:func:`kerinci_xr.accuracy.strata_estimates`) against ``truth`` (1-d arrays of training ids,
    one per pixel). Strata of fewer than ``2 * units`` pixels are left out of the population.
    Returns, for OA and the area, UA and PA of every class holding ``min_share`` of the truth and
    of the map, its population value (``true``) and each sample's ``estimates`` and whether its
    95 % interval ``covered`` the value."""
    import numpy as np

    rng = np.random.default_rng(seed)
    keys, sizes = np.unique(strata_map, return_counts=True)
    keep = sizes >= 2 * units
    keys, sizes = keys[keep], sizes[keep]
    pop = np.isin(strata_map, keys)
    truth, strata_map, assessed = truth[pop], strata_map[pop], assessed[pop]
    members = {h: np.flatnonzero(strata_map == h) for h in keys}
    big = [
        c
        for c in range(1, n_classes + 1)
        if (truth == c).mean() > min_share and (assessed == c).mean() > min_share
    ]
    true = {"OA": float((assessed == truth).mean())}
    for c in big:
        true[f"area {c}"] = float((truth == c).mean())
        true[f"UA {c}"] = float((truth[assessed == c] == c).mean())
        true[f"PA {c}"] = float((assessed[truth == c] == c).mean())
    out: dict[str, dict[str, Any]] = {
        k: {"true": v, "estimates": np.empty(reps), "covered": np.empty(reps, bool)} for k, v in true.items()
    }
    weights = dict(zip(keys.tolist(), sizes.tolist(), strict=True))
    for i in range(reps):
        sample = np.concatenate([rng.choice(members[h], units, replace=False) for h in keys])
        res = strata_estimates(
            strata_map[sample], assessed[sample], truth[sample], weights, n_classes=n_classes
        )
        found = {"OA": res["overall_accuracy"]}
        for c in big:
            row = res["classes"][c - 1]
            found |= {
                f"area {c}": row["area_proportion"],
                f"UA {c}": row["users_accuracy"],
                f"PA {c}": row["producers_accuracy"],
            }
        for k, e in found.items():
            out[k]["estimates"][i] = e["estimate"]
            out[k]["covered"][i] = e["ci95"][0] <= true[k] <= e["ci95"][1]
    return out


def with_errors(truth: Any, share: float, rng: Any) -> Any:
    """A map: ``truth`` with a ``share`` of its pixels given a class drawn from its class mix."""
    import numpy as np

    out = truth.copy()
    wrong = rng.random(out.size) < share
    out[wrong] = rng.permutation(truth)[wrong]
    return np.asarray(out)
