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

__all__ = ["PRIVATE", "dask_processes", "private_namespaces"]

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
