"""What every stage is: an options dataclass, the products it writes by kind, and ``run``."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import uuid
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._locations import Location, absolute, as_location, is_url, read_bytes
from .._options import OptionSpec, check, option, specs
from .._outputs import output_set
from .._products import PRODUCTS, check_outputs, companions, kind_of, product_exists, read_on_workers
from ..cluster import active_client, dask_scheduler, workers_missing
from ..distributed import barrier, teardown, world
from ..errors import InvalidInputError

__all__ = ["RECORD", "Context", "DaskOptions", "Stage", "flat", "read_record"]

log = logging.getLogger("kerinci_xr")

#: The run record a pipeline keeps in its run folder: each stage's options and products by kind.
RECORD = ".kerinci-stages.json"


@dataclass(frozen=True)
class Context:
    """How a stage reports: progress bars, and where its tables and messages go."""

    progress: bool = False
    echo: Callable[[str], Any] = log.info


@dataclass(kw_only=True)
class DaskOptions:
    """Options of the stages that compute with Dask: where they run."""

    workers: int | None = option(None, "start a LocalCluster of N worker processes", metavar="N", ge=1)
    scheduler: str | None = option(
        None, "connect to a running Dask scheduler instead (tcp://host:8786)", metavar="ADDRESS"
    )


@dataclass(frozen=True)
class Stage:
    """A stage: its options (declared once), what it reads and writes, and how it runs.

    ``run(options, context)`` returns what it wrote by kind (paths), plus any result worth
    returning to a Python caller (a report, a summary). ``products`` gives the paths a run
    writes by kind without running it (default: the options declared ``io="out"``), so the
    pipeline runner can wire and order stages and check what is up to date.
    """

    name: str
    help: str
    options: type
    run: Callable[[Any, Context], dict[str, Any]]
    example: str
    args: tuple[str, ...] = ()
    extra_products: Callable[[Any], dict[str, Any]] | None = None
    #: Options completed before the run (the report fills its inputs from a run folder's record).
    complete: Callable[[Any], Any] | None = None
    #: Whether a run may replace its existing outputs (``--overwrite``; a resumed run its own).
    replaces: Callable[[Any], bool] = lambda o: bool(getattr(o, "overwrite", False))
    #: Whether the stage runs as one of several processes under torchrun (rank 0 writes).
    distributed: bool = False

    @functools.cached_property
    def specs(self) -> list[OptionSpec]:  # resolved once: type hints are not free to read
        return list(specs(self.options))

    def make(self, values: Mapping[str, Any], *, where: str) -> Any:
        """Options from a mapping: unknown keys, missing values and wrong types are refused."""
        checked = check(self.specs, values, where=where)
        missing = [s.name for s in self.specs if s.required and checked.get(s.name) is None]
        if missing:
            raise InvalidInputError(f"{where + ': ' if where else ''}{self.name} needs {', '.join(missing)}.")
        return self.options(**checked)

    def _paths(self, opts: Any, io: str) -> list[tuple[OptionSpec, Any]]:
        """Locations of one direction: a ``Path`` for a local one, the URL string for a URL."""
        values = [(s, getattr(opts, s.name)) for s in self.specs if s.meta.get("io") == io]
        return [
            (s, tuple(map(as_location, v)) if isinstance(v, tuple) else as_location(v))
            for s, v in values
            if v is not None
        ]

    def inputs(self, opts: Any, *, with_companions: bool = False) -> dict[str, Path]:
        """Paths the run reads, by option name (``image[1]`` for the second of several); with
        ``with_companions``, also the files that belong with them (a checkpoint's history)."""
        out: dict[str, Path] = {}
        for s, p in self._paths(opts, "in"):
            paths = {f"{s.name}[{i}]": q for i, q in enumerate(p)} if isinstance(p, tuple) else {s.name: p}
            out |= paths
            if with_companions:
                out |= {f"{k} ({c.name})": c for k, q in paths.items() for c in companions(q, s.meta["kind"])}
        return out

    def products(self, opts: Any) -> dict[str, Any]:
        """Paths the run writes, by kind (a tuple of paths where one kind has several, by date)."""
        out = {s.meta["kind"]: p for s, p in self._paths(opts, "out")}
        return out | (self.extra_products(opts) if self.extra_products else {})

    def outputs(self, opts: Any) -> dict[str, Path]:
        """Every path the run writes, by kind (``image_2023``-style keys for several)."""
        out: dict[str, Path] = {}
        for kind, p in self.products(opts).items():
            out |= {f"{kind}[{i}]": q for i, q in enumerate(p)} if isinstance(p, tuple) else {kind: p}
        return out

    def absolute(self, opts: Any) -> Any:
        """The options with every local input and output made absolute here, on the client: a
        relative path in a task graph would be resolved in each worker's own directory."""
        changes = {}
        for s in self.specs:
            value = getattr(opts, s.name)
            if s.meta.get("io") and value is not None:
                changes[s.name] = tuple(map(absolute, value)) if isinstance(value, tuple) else absolute(value)
        return dataclasses.replace(opts, **changes)

    def execute(
        self, opts: Any, ctx: Context | None = None, *, inside: Location | None = None
    ) -> dict[str, Any]:
        """Run with these options, on the Dask scheduler they name.

        Before any work, every output is checked against the run's inputs, its other outputs and
        the overwrite rule, and claimed (locked) until the run's output set commits; ``inside``
        (a pipeline's run folder) is where every output must resolve to.
        """
        ctx = ctx or Context()
        opts = self.absolute(self.complete(opts) if self.complete else opts)
        w = world()
        if w.active:
            return self._execute_distributed(opts, ctx, w, inside)
        with output_set():  # the run's outputs are committed (or undone) as one set
            self._claim(opts, inside)
            own = isinstance(opts, DaskOptions) and (opts.workers is not None or opts.scheduler is not None)
            # on the scheduler the options name, else the one in use (threads, or the caller's client)
            with dask_scheduler(workers=opts.workers, address=opts.scheduler) if own else nullcontext():
                client = active_client()
                if client is not None:
                    self.check_workers_see(opts, client)
                return self.run(opts, ctx)

    def _claim(self, opts: Any, inside: Location | None) -> None:
        """Check every output against the run's inputs, its other outputs and the overwrite rule,
        and claim it until the output set commits."""
        check_outputs(
            self.outputs(opts),
            self.inputs(opts, with_companions=True),
            overwrite=self.replaces(opts),
            stage=self.name,
            inside=inside,
        )

    def _execute_distributed(
        self, opts: Any, ctx: Context, w: Any, inside: Location | None
    ) -> dict[str, Any]:
        """One of several processes under torchrun: rank 0 checks, claims, writes and commits every
        output as usual; the others only compute (and print nothing), and every process returns
        once rank 0's set is committed."""
        if not self.distributed:
            raise InvalidInputError(
                f"{self.name}: runs in one process; only train and crossval run under torchrun. Fix: run "
                f"kerinci-xr {self.name} without torchrun."
            )
        try:
            if w.main:
                with output_set():
                    self._claim(opts, inside)
                    result = self.run(opts, ctx)
            else:
                result = self.run(opts, Context(progress=False, echo=lambda *_: None))
            barrier(w)  # rank 0's set is committed: every process may go on
            return result
        finally:
            teardown()

    def check_workers_see(self, opts: Any, client: Any) -> None:
        """Refuse, before any work, a local input the cluster's workers read, or a local output
        they write (a Zarr store), on a disk some worker does not see (a cluster whose workers run
        on other machines): they would fail, or leave the product on their own disks."""
        inputs = {
            name: p
            for name, p in self.inputs(opts).items()
            if not is_url(p) and read_on_workers(self._kind(name), p)
        }
        outputs = {
            name: p
            for name, p in self.outputs(opts).items()
            if not is_url(p) and PRODUCTS[kind_of(name)].zarr
        }
        if not inputs and not outputs:
            return
        probes = {name: p.parent / f".kerinci-probe-{uuid.uuid4().hex[:12]}" for name, p in outputs.items()}
        for probe in probes.values():
            probe.touch()
        try:
            blind = workers_missing(client, [str(p) for p in [*inputs.values(), *probes.values()]])
        finally:
            for probe in probes.values():
                probe.unlink(missing_ok=True)
        for name, p in [*inputs.items(), *((n, outputs[n]) for n in probes)]:
            where = str(probes[name]) if name in probes else str(p)
            if where in blind:
                what = "write" if name in probes else "read"
                raise InvalidInputError(
                    f"{self.name}: {name} {p} is on a disk the Dask cluster's workers do not see (worker "
                    f"{blind[where]} finds no {'folder' if name in probes else 'file'} there), and the "
                    f"workers {what} it. Fix: put it on object storage (s3://bucket/..., gs://, az://) or "
                    "on a disk every worker mounts at the same path."
                )

    def _kind(self, name: str) -> Any:
        spec = next(s for s in self.specs if s.name == name.split("[", 1)[0])
        return spec.meta.get("kind")

    def __call__(self, *args: Any, progress: bool = False, echo: Callable | None = None, **kw: Any):
        """The Python API: positional ``args`` as declared, every other option by keyword."""
        if len(args) > len(self.args):
            raise TypeError(f"{self.name}() takes {len(self.args)} positional argument(s), got {len(args)}")
        values = dict(zip(self.args, args, strict=False)) | kw
        opts = self.make(values, where=f"{self.name}()")
        return self.execute(opts, Context(progress=progress, echo=echo or log.info))


def options_record(opts: Any) -> dict[str, Any]:
    """The options that decide a stage's products: not where it runs, nor what the runner sets."""
    skip = {f.name for f in dataclasses.fields(DaskOptions)}
    skip |= {s.name for s in specs(type(opts)) if not s.meta.get("pipeline", True)}
    values = {k: v for k, v in dataclasses.asdict(opts).items() if k not in skip}
    return json.loads(json.dumps(values, default=str))


def flat(products: dict[str, Any]) -> list[Path]:
    """Every path of a products mapping (tuples of paths unpacked)."""
    return [q for p in products.values() for q in (p if isinstance(p, tuple) else (p,))]


def read_record(run_dir: str | os.PathLike) -> dict[str, Any]:
    """A run folder's record (empty when it has none), with every product's location usable
    from here: the record names those inside the folder relative to it."""
    root = as_location(run_dir)
    path = root / RECORD
    if not product_exists(path):
        return {}
    record = json.loads(read_bytes(path, "run record"))

    def here(p: Any) -> Any:
        if isinstance(p, list):
            return tuple(here(q) for q in p)
        return p if is_url(p) or os.path.isabs(p) else str(root / p)

    for entry in record.values():
        if isinstance(entry, dict) and entry.get("relative_to") == "run folder":
            entry["products"] = {k: here(p) for k, p in entry.get("products", {}).items()}
            entry["paths"] = [here(p) for p in entry.get("paths", [])]
    return record
