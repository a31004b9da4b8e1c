"""Choosing the Dask scheduler: threads by default, a LocalCluster, or a running cluster's address."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any

import dask

from .errors import InvalidInputError

__all__ = ["active_client", "compute", "dask_scheduler"]

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
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        log.info("started LocalCluster with %d worker(s)", workers)
        yield client


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


def compute(*objs: Any, progress: bool = False) -> tuple:
    """``dask.compute`` with an optional progress bar, on whatever scheduler is active."""
    if not progress:
        return dask.compute(*objs)
    client = active_client()
    if client is not None:
        from distributed import progress as dprogress

        futures = client.compute(list(objs))
        dprogress(futures)
        print(file=sys.stderr)
        return tuple(client.gather(futures))
    from dask.diagnostics import ProgressBar

    with ProgressBar(out=sys.stderr):
        return dask.compute(*objs)
