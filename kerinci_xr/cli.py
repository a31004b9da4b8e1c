"""The ``kerinci-xr`` command line, built from the stages' option declarations; ``main(argv) -> int``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from zarr.core import sync as zarr_sync

from . import __version__
from ._locations import URLPath, as_location, is_url
from ._options import OptionSpec
from .distributed import world
from .errors import KerinciError
from .pipeline import demo_config, pipeline_config, run_pipeline
from .stages import STAGES, Context, Stage

__all__ = ["build_parser", "main", "stage_values"]

EXIT_CODES = "exit status: 0 success, 1 an error in the toolkit or environment, 2 bad usage or bad input"


def _list_of(item: type):
    def comma_separated(text: str) -> list:  # argparse reports a ValueError with this name
        return [item(t.strip()) for t in text.split(",") if t.strip()]

    return comma_separated


def _add(p: argparse.ArgumentParser, spec: OptionSpec) -> None:
    """One argument from one option declaration: flag, type, choices, default and help."""
    flag = "--" + spec.name.replace("_", "-")
    text = spec.meta.get("help", "").replace("%", "%%")  # argparse %-formats help texts
    kw: dict[str, Any] = {"help": text, "metavar": spec.meta.get("metavar")}
    if spec.base is bool:  # a switch: --name turns on an option that is off, --no-name the reverse
        on = spec.default is not True
        flag = flag if on else "--no-" + flag[2:]
        if not on:  # the flag's help says what the flag does, not what the option is
            text = spec.meta.get("off") or f"turn off: {text}"
        p.add_argument(flag, dest=spec.name, action="store_true" if on else "store_false", help=text)
        return
    if spec.choices:
        kw |= {"choices": spec.choices, "metavar": None, "type": type(spec.choices[0])}
    elif spec.item is not None:  # comma-separated, and the flag may repeat (--image a.tif --image b.tif)
        kw |= {"type": _list_of(spec.item), "metavar": kw["metavar"] or "A,B,...", "action": "extend"}
    elif spec.base in (int, float):
        kw["type"] = spec.base
    if not spec.required:
        # a repeatable flag extends its default: start from None, the declared default is filled in later
        kw["default"] = None if kw.get("action") == "extend" else spec.default
        if spec.default not in (None, ()):
            shown = ",".join(map(str, spec.default)) if isinstance(spec.default, tuple) else spec.default
            kw["help"] = f"{text} (default: {shown})"
    if spec.meta.get("positional"):
        p.add_argument(spec.name, nargs=None if spec.required else "?", **kw)
    else:
        p.add_argument(flag, dest=spec.name, required=spec.required, **kw)


def _verbosity(p: argparse.ArgumentParser, default: Any = argparse.SUPPRESS) -> None:
    p.add_argument("-v", "--verbose", action="store_true", default=default, help="log what each stage does")
    p.add_argument("-q", "--quiet", action="store_true", default=default, help="no progress bars")


def _subparser(sub, name: str, text: str, example: str) -> argparse.ArgumentParser:
    p = sub.add_parser(
        name,
        help=text.replace("%", "%%"),
        description=text[0].upper() + text[1:] + ".",
        epilog=f"example:\n  {example}\n\n{EXIT_CODES}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _verbosity(p)
    return p


def build_parser() -> argparse.ArgumentParser:
    """The parser: one subcommand per stage, plus ``demo`` and ``run``."""
    ap = argparse.ArgumentParser(
        prog="kerinci-xr",
        description="Land-cover classification from multispectral imagery with xarray, Dask and PyTorch.",
        epilog=EXIT_CODES,
    )
    ap.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _verbosity(ap, default=False)
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for stage in STAGES.values():
        p = _subparser(sub, stage.name, stage.help, stage.example)
        for spec in stage.specs:
            _add(p, spec)
    p = _subparser(
        sub, "demo", "generate a small Kerinci-like scene and run every stage on it", "kerinci-xr demo"
    )
    p.add_argument("--out", default="kerinci_demo", help="working folder (default: kerinci_demo)")
    p.add_argument("--size", type=int, help="scene edge in pixels (default: the demo recipe's 1500)")
    p.add_argument("--seed", type=int, help="scene seed (default: the demo recipe's 0)")
    p.add_argument("--epochs", type=int, help="training epochs (default: the demo recipe's 8)")
    p.add_argument("--force", action="store_true", help="redo stages that are up to date")
    p = _subparser(
        sub,
        "run",
        "run the stages of a pipeline file (TOML) or of a recipe shipped with the package",
        "kerinci-xr run kerinci --set train.epochs=2",
    )
    p.add_argument(
        "pipeline", help="pipeline file (.toml), or a packaged recipe: kerinci (reads data/kerinci/), demo"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="change one key of the pipeline for this run (repeatable; the value is read as TOML)",
    )
    p.add_argument("--force", action="store_true", help="redo stages that are up to date")
    for p in (sub.choices["demo"], sub.choices["run"]):
        p.add_argument("--workers", type=int, metavar="N", help="start a LocalCluster of N worker processes")
        p.add_argument("--scheduler", metavar="ADDRESS", help="connect to a running Dask scheduler")
    return ap


def stage_values(stage: Stage, args: argparse.Namespace) -> dict[str, Any]:
    """A stage's option values from parsed arguments (repeatable options not given: their default)."""
    values = {s.name: getattr(args, s.name) for s in stage.specs}
    return {
        k: (s.default if v is None and s.item is not None and not s.required else v)
        for (k, v), s in zip(values.items(), stage.specs, strict=True)
    }


def _run_stage(stage: Stage, args: argparse.Namespace) -> int:
    opts = stage.make(stage_values(stage, args), where="")
    result = stage.execute(opts, Context(progress=not args.quiet, echo=print))
    if world().main:  # under torchrun rank 0 wrote everything
        for value in result.values():
            if isinstance(value, Path | URLPath):
                print(f"wrote {value}")
    return 0


def _run_pipeline(args: argparse.Namespace) -> int:
    if args.command == "demo":
        config, out_dir = demo_config(), as_location(args.out)
        changes = {
            "synth": {"height": args.size, "width": args.size, "seed": args.seed},
            "train": {"epochs": args.epochs},
        }
        for section, values in changes.items():
            config[section] |= {k: v for k, v in values.items() if v is not None}
        base, source = None, "demo"
    else:
        (config, base), out_dir, source = pipeline_config(args.pipeline, args.set), None, args.pipeline
    results = run_pipeline(
        config,
        base=base,
        source=source,
        force=args.force,
        progress=not args.quiet,
        out_dir=out_dir,
        echo=print,
        workers=args.workers,
        scheduler=args.scheduler,
    )
    print("\nwhat was written:")
    for stage, paths in results.items():
        for p in paths.values():
            print(f"  {stage:<10} {p}")
    if "report" in results:
        page = results["report"]["report"]
        print(f"\nopen the report in a browser: {page if is_url(page) else page.resolve()}")
    return 0


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"  # what is wrong, without the toolkit's source file and line


@contextlib.contextmanager
def _console(verbose: bool) -> Iterator[None]:
    """The toolkit's log lines with timestamps (``-v``), warnings as one line; restored after."""
    logger = logging.getLogger("kerinci_xr")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
    level, propagate, format_warning = logger.level, logger.propagate, warnings.formatwarning
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    logger.propagate = False
    warnings.formatwarning = _one_line_warning  # type: ignore[assignment]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default", UserWarning)
            yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
        warnings.formatwarning = format_warning


log = logging.getLogger(__name__)


async def _drain() -> None:
    """Let every other task on the running loop finish, collecting their errors."""
    me = asyncio.current_task()
    await asyncio.gather(*(t for t in asyncio.all_tasks() if t is not me), return_exceptions=True)


def _quiet_async_leftovers() -> None:
    """After an error, reads still pending on Zarr's event loop (the siblings of a chunk that failed)
    must not print tracebacks at exit: they are let finish and their errors collected quietly; the
    error has been said once, in one line."""
    with contextlib.suppress(Exception):  # a private zarr function: if it moves, the noise returns
        loop = zarr_sync._get_loop()
        loop.set_exception_handler(lambda lp, ctx: log.debug("zarr: %s", ctx.get("message")))
        asyncio.run_coroutine_threadsafe(_drain(), loop).result(timeout=30)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``kerinci-xr``; returns the exit status.

    0 success, 1 an error in the toolkit or its environment (a one-line message; ``-v`` adds the
    traceback), 2 bad usage or bad input, 130 interrupted (Ctrl-C).
    """
    args = build_parser().parse_args(argv)
    prefix = f"kerinci-xr {args.command}"
    try:
        with _console(args.verbose):
            if args.command in STAGES:
                return _run_stage(STAGES[args.command], args)
            return _run_pipeline(args)
    except KerinciError as exc:
        _quiet_async_leftovers()
        print(f"{prefix}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader (e.g. `head`) went away: nothing more to say
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's flush at exit must not fail again
        return 1
    except Exception as exc:
        _quiet_async_leftovers()
        if args.verbose:
            traceback.print_exc()
        print(
            f"{prefix}: error in the toolkit or its environment: {type(exc).__name__}: {exc}"
            + ("" if args.verbose else " (-v shows where)"),
            file=sys.stderr,
        )
        return 1
