"""Choosing the Dask scheduler: threads by default, a LocalCluster, or a running cluster's address."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any

import dask
from dask.callbacks import Callback

from .errors import InvalidInputError

__all__ = ["LOG_EVERY_S", "active_client", "compute", "dask_scheduler", "live_progress", "workers_missing"]

#: Where stderr is not a terminal (a log file, a batch job), progress is one line this often.
LOG_EVERY_S = 10.0

log = logging.getLogger(__name__)


@contextlib.contextmanager
def dask_scheduler(
    *,
    workers: int | None = None,
    address: str | None = None,
    threads_per_worker: int | None = None,
    processes: bool = True,
    memory_limit: str | None = "auto",
) -> Iterator[Any]:
    """Run the enclosed computations on the chosen scheduler; yields the ``Client`` or ``None``.

    Parameters
    ----------
    workers
        Start a ``distributed.LocalCluster`` with this many workers (processes by default).
    address
        Connect to a running scheduler (``tcp://host:8786``) instead.
    threads_per_worker
        Threads per LocalCluster worker (default: cores / workers).

    With neither ``workers`` nor ``address`` Dask's threaded scheduler is used.
    """
    if workers is not None and address is not None:
        raise InvalidInputError("pass either workers (a LocalCluster) or address, not both.")
    if workers is None and address is None:
        with dask.config.set(scheduler="threads"):
            yield None
        return
    from distributed import Client, LocalCluster

    if address is not None:
        log.info("connecting to Dask scheduler at %s", address)
        with Client(address) as client:
            print(f"Dask cluster at {address}, dashboard {client.dashboard_link}", file=sys.stderr)
            yield client
        return
    if workers is not None and workers < 1:
        raise InvalidInputError(f"workers: expected at least 1, found {workers}.")
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=threads_per_worker,
            processes=processes,
            memory_limit=memory_limit,
            dashboard_address=":0",
        ) as cluster,
        Client(cluster) as client,
    ):
        print(f"Dask LocalCluster of {workers} worker(s), dashboard {client.dashboard_link}", file=sys.stderr)
        yield client


def _exist(paths: list[str]) -> list[bool]:
    import os

    return [os.path.exists(p) for p in paths]


def workers_missing(client: Any, paths: list[str]) -> dict[str, str]:
    """The paths some worker of ``client``'s cluster does not see, each with one such worker."""
    if not paths:
        return {}
    seen = client.run(_exist, list(paths))
    return {p: w for w, oks in sorted(seen.items()) for p, ok in zip(paths, oks, strict=True) if not ok}


def active_client() -> Any:
    """The current ``distributed.Client`` if one is active and in use, else ``None``."""
    if "distributed" not in sys.modules:
        return None
    from distributed import get_client

    try:
        client = get_client()
    except ValueError:
        return None
    return client if dask.config.get("scheduler", None) in (None, "dask.distributed") else None


def live_progress() -> bool:
    """Whether progress may redraw itself: stderr is a terminal (not a log file or a pipe)."""
    return sys.stderr.isatty()


class _LogLines(Callback):
    """Dask progress as one plain line every :data:`LOG_EVERY_S` seconds (for logs, not terminals)."""

    def _start_state(self, dsk, state) -> None:
        self.t0 = self.last = time.monotonic()
        self.total = len(dsk)

    def _posttask(self, key, result, dsk, state, worker_id) -> None:
        now = time.monotonic()
        if now - self.last >= LOG_EVERY_S:
            self.last = now
            done = len(state["finished"])
            print(
                f"progress: {100 * done / max(self.total, 1):.0f} % of {self.total} tasks, "
                f"{now - self.t0:.0f} s",
                file=sys.stderr,
                flush=True,
            )


def _gather_with_lines(client: Any, futures: list) -> list:
    """The results of ``futures``, with a progress line every :data:`LOG_EVERY_S` seconds while
    they run. ``distributed.wait`` raises ``TimeoutError`` when its time is up with futures
    pending: that is the moment for a line, not an error."""
    from distributed import wait

    t0 = time.monotonic()
    while True:
        try:
            wait(futures, timeout=LOG_EVERY_S, return_when="ALL_COMPLETED")
        except TimeoutError:
            done = sum(f.done() for f in futures)
            print(
                f"progress: {done} of {len(futures)} results, {time.monotonic() - t0:.0f} s",
                file=sys.stderr,
                flush=True,
            )
            continue
        return client.gather(futures)


def compute(*objs: Any, progress: bool = False) -> tuple:
    """``dask.compute`` on whatever scheduler is active, with progress if asked.

    On a terminal, a live bar; elsewhere (a log file, a batch job) one line every
    :data:`LOG_EVERY_S` seconds, so logs do not fill with redrawn frames.
    """
    if not progress:
        return dask.compute(*objs)
    client = active_client()
    if client is not None:
        futures = client.compute(list(objs))
        if not live_progress():
            return tuple(_gather_with_lines(client, futures))
        from distributed import progress as dprogress

        dprogress(futures)
        print(file=sys.stderr)
        return tuple(client.gather(futures))
    if not live_progress():
        with _LogLines():
            return dask.compute(*objs)
    from dask.diagnostics import ProgressBar

    with ProgressBar(out=sys.stderr):
        return dask.compute(*objs)
