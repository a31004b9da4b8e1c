"""The pipeline runner: a TOML file of stage sections, validated whole, wired and run in order.

Each section is a stage (``[prepare]``, ``[sample]`` ...) whose keys are that stage's options,
type-checked against its declaration before anything runs. Input paths a section leaves unset
are taken from the stage that writes that kind of product (the cube for ``sample``, the model
for ``predict``); stages run in the order their inputs and outputs require. Input paths are
relative to the pipeline file, outputs to the run folder (``[pipeline] out_dir``), where unset
outputs get their declared names. A stage whose products are newer than its inputs and were
made with the same options is skipped (unless ``force``).
"""

from __future__ import annotations

import contextlib
import logging
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from ._options import coerce, option, specs
from .cluster import dask_scheduler
from .errors import InputFileNotFoundError, InvalidInputError
from .stages import STAGES, Stage
from .stages._base import Context, options_record, read_record, write_record

__all__ = ["Step", "demo_config", "load_pipeline", "plan", "run_pipeline"]

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class PipelineOptions:
    name: str = option("pipeline", "a name for the run")
    out_dir: str = option("run", "run folder, relative to the pipeline file")


@dataclass(frozen=True)
class Step:
    """One stage of a planned pipeline, with its options complete."""

    stage: Stage
    options: Any

    @property
    def name(self) -> str:
        return self.stage.name


def demo_config() -> dict[str, Any]:
    """The embedded default: the packaged ``pipelines/demo.toml`` as a mapping."""
    return tomllib.loads(files(__package__).joinpath("pipelines", "demo.toml").read_text(encoding="utf-8"))


def load_pipeline(path: str | Path) -> tuple[dict[str, Any], Path]:
    """Read a pipeline TOML file; returns the mapping and the folder its paths are relative to."""
    path = Path(path)
    if not path.is_file():
        raise InputFileNotFoundError(f"{path}: pipeline file not found.")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8")), path.parent.resolve()
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInputError(
            f"{path}: expected a TOML pipeline file, found invalid TOML ({exc})."
        ) from exc


def _section(config: Mapping[str, Any], name: str, source: str) -> dict[str, Any]:
    values = config.get(name) or {}
    if not isinstance(values, Mapping):
        raise InvalidInputError(f"{source}: [{name}] must be a table, found {values!r}.")
    return dict(values)


def plan(
    config: Mapping[str, Any], *, base: Path, out_dir: str | Path | None = None, source: str = "<config>"
) -> tuple[list[Step], Path]:
    """Validate a whole pipeline and return its steps in running order, and the run folder."""
    if not isinstance(config, Mapping):
        raise InvalidInputError(f"{source}: expected a table of sections, found {type(config).__name__}.")
    unknown = [s for s in config if s != "pipeline" and s not in STAGES]
    if unknown:
        raise InvalidInputError(
            f"{source}: unknown section(s) {unknown}; expected [pipeline] and some of {list(STAGES)}."
        )
    head = _section(config, "pipeline", source)
    bad = [k for k in head if k not in {s.name for s in specs(PipelineOptions)}]
    if bad:
        raise InvalidInputError(f"{source}: unknown key(s) {bad} in [pipeline]; expected name, out_dir.")
    root = Path(out_dir) if out_dir is not None else base / str(head.get("out_dir", PipelineOptions.out_dir))
    sections = {name: _section(config, name, source) for name in config if name != "pipeline"}
    if not sections:
        raise InvalidInputError(f"{source}: expected at least one stage section, e.g. [synth] or [prepare].")
    values = {name: _resolve(STAGES[name], given, base, root, source) for name, given in sections.items()}
    made = {name: STAGES[name].products(_partial(STAGES[name], v)) for name, v in values.items()}
    steps = []
    for name, vals in values.items():
        stage = STAGES[name]
        for s in stage.specs:
            kind = s.meta.get("kind")
            if s.meta.get("io") == "in" and kind and vals.get(s.name) is None:
                makers = [m for m in made if m != name and kind in made[m]]
                if len(makers) > 1:
                    raise InvalidInputError(
                        f"{source}: [{name}] {s.name}: stages {makers} all write a {kind}; set it."
                    )
                if makers:
                    vals[s.name] = str(made[makers[0]][kind])
        if any(s.name == "overwrite" for s in stage.specs):
            vals["overwrite"] = True  # a rerun replaces what the pipeline wrote before
        steps.append(Step(stage, stage.make(vals, where=f"{source}: [{name}]")))
    return _order(steps, source), root


def _resolve(stage: Stage, given: dict[str, Any], base: Path, root: Path, source: str) -> dict[str, Any]:
    """Type-check a section and make its paths absolute (inputs: base; outputs: the run folder)."""
    where = f"{source}: [{stage.name}]"
    known = {s.name: s for s in stage.specs if s.meta.get("pipeline", True)}
    bad = [k for k in given if k not in known]
    if bad:
        raise InvalidInputError(f"{where}: unknown key(s) {bad}; expected some of {sorted(known)}.")
    vals = {k: coerce(known[k], v, where=where) for k, v in given.items()}
    for s in known.values():
        io = s.meta.get("io")
        if io == "out" and vals.get(s.name) is None and s.meta.get("run_name"):
            vals[s.name] = s.meta["run_name"]
        if io in ("in", "out") and vals.get(s.name) is not None:
            vals[s.name] = str((base if io == "in" else root) / vals[s.name])
    return vals


def _partial(stage: Stage, vals: dict[str, Any]) -> Any:
    """Options with placeholders for inputs not wired yet (only to ask for products)."""
    fill = {s.name: "" for s in stage.specs if s.required and vals.get(s.name) is None}
    return stage.options(**(vals | fill))


def _order(steps: list[Step], source: str) -> list[Step]:
    """Stages in an order where each runs after those that write its inputs (file order otherwise)."""
    writes = {step.name: set(step.stage.products(step.options).values()) for step in steps}
    todo, done, out = list(steps), set(), []
    while todo:
        for step in todo:
            needs = set(step.stage.inputs(step.options).values())
            if all(not (needs & writes[o.name]) or o.name in done for o in todo if o is not step):
                out.append(step)
                done.add(step.name)
                todo.remove(step)
                break
        else:
            raise InvalidInputError(
                f"{source}: the stages {[s.name for s in todo]} need each other's outputs."
            )
    return out


def _newest(paths: list[Path]) -> float:
    times = []
    for p in paths:
        if p.is_dir():
            times.extend(q.stat().st_mtime for q in p.rglob("*"))
        times.append(p.stat().st_mtime)
    return max(times)


def _up_to_date(step: Step, record: Mapping[str, Any]) -> bool:
    outputs = list(step.stage.products(step.options).values())
    if not all(p.exists() for p in outputs) or record.get(step.name, {}).get("params") != options_record(
        step.options
    ):
        return False
    inputs = [p for p in step.stage.inputs(step.options).values() if p.exists()]
    return not inputs or min(p.stat().st_mtime for p in outputs) >= _newest(inputs)


def run_pipeline(
    config: Mapping[str, Any] | str | Path,
    *,
    force: bool = False,
    progress: bool = False,
    out_dir: str | Path | None = None,
    echo: Callable[[str], Any] = log.info,
    workers: int | None = None,
    scheduler: str | None = None,
) -> dict[str, dict[str, Path]]:
    """Run a pipeline (a TOML path or a mapping); return each stage's products by kind.

    ``workers`` (a LocalCluster) or ``scheduler`` (a running cluster's address) is where the
    stages compute, unless a section names its own.
    """
    if isinstance(config, (str, Path)):
        raw, base = load_pipeline(config)
        source = str(config)
    else:
        raw, base, source = config, Path.cwd(), "<config>"
    steps, root = plan(raw, base=base, out_dir=out_dir, source=source)
    written = {p for step in steps for p in step.stage.products(step.options).values()}
    for step in steps:
        for key, path in step.stage.inputs(step.options).items():
            if path not in written and not path.exists():
                raise InputFileNotFoundError(f"[{step.name}] {key}: {path} not found. Fix: check the path.")
    root.mkdir(parents=True, exist_ok=True)
    cluster = workers is not None or scheduler is not None
    with dask_scheduler(workers=workers, address=scheduler) if cluster else contextlib.nullcontext():
        return _run_steps(steps, root, force=force, ctx=Context(progress=progress, echo=echo))


def _run_steps(steps: list[Step], root: Path, *, force: bool, ctx: Context) -> dict[str, dict[str, Path]]:
    record = read_record(root)
    results: dict[str, dict[str, Path]] = {}
    for step in steps:
        if not force and _up_to_date(step, record):
            ctx.echo(f"[{step.name}] up to date, skipped (use --force to redo)")
        else:
            ctx.echo(f"[{step.name}] running")
            step.stage.execute(step.options, ctx)
        products = step.stage.products(step.options)
        record[step.name] = {
            "params": options_record(step.options),
            "products": {k: str(p) for k, p in products.items()},
        }
        write_record(root, record)
        results[step.name] = products
    return results
