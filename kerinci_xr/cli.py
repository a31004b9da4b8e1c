"""The ``kerinci-xr`` command line: ``main(argv) -> int``, testable in-process."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from .errors import InvalidInputError, KerinciError

__all__ = ["main"]

log = logging.getLogger("kerinci_xr")


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _scheduler_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--workers", type=int, metavar="N", help="start a LocalCluster of N worker processes")
    g.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="connect to a running Dask scheduler (tcp://host:8786)",
    )


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    ap = argparse.ArgumentParser(
        prog="kerinci-xr",
        description="Land-cover classification from multispectral imagery with xarray, Dask and PyTorch.",
    )
    ap.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    ap.add_argument("-v", "--verbose", action="store_true", help="log what each stage does")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("prepare", help="build the analysis-ready Zarr cube from imagery, labels and radar")
    p.add_argument("--image", required=True, help="optical GeoTIFF (e.g. Landsat_Kerinci_2023_v1.tif)")
    p.add_argument("--labels", help="label GeoTIFF with the legend's original codes")
    p.add_argument("--legend", help="lc.json with values, label, palette")
    p.add_argument("--radar", help="radar GeoTIFF on any grid (e.g. PALSAR HH,HV in dB x1e3)")
    p.add_argument("--bands", type=_csv, help="optical band names, comma-separated (default: from the file)")
    p.add_argument("--radar-bands", type=_csv, default=["HH", "HV"], help="radar band names (default HH,HV)")
    p.add_argument(
        "--scale",
        type=float,
        default=1e-4,
        help="reflectance scale (1e-4 for x1e4, 0.00392 for 8-bit DN)",
    )
    p.add_argument("--offset", type=float, default=0.0, help="reflectance offset added after scaling")
    p.add_argument("--nodata", type=float, help="optical nodata value (default: from the file)")
    p.add_argument("--radar-scale", type=float, default=1e-3, help="radar scale (1e-3 for dB x1e3, 1 for dB)")
    p.add_argument("--chunk", type=int, default=1024, help="chunk edge in pixels (default 1024)")
    p.add_argument("--sensor", default="auto", choices=["auto", "landsat8", "landsat7", "sentinel2"])
    p.add_argument(
        "--align-labels",
        action="store_true",
        help="warp off-grid labels (nearest) instead of failing",
    )
    p.add_argument("--strict", action="store_true", help="fail on label codes missing from the legend")
    p.add_argument("--out", required=True, help="output cube (.zarr)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing cube")
    _scheduler_args(p)

    p = sub.add_parser("info", help="grid, bands, class pixel counts and hectares of a cube")
    p.add_argument("cube")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _scheduler_args(p)

    p = sub.add_parser("sample", help="draw N patches per class in spatial splits into a Zarr patch store")
    p.add_argument("cube")
    p.add_argument("--per-class", type=int, default=20, help="centres per class and split (default 20)")
    p.add_argument("--patch", type=int, default=128, help="window edge in pixels (default 128)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-nodata", type=float, default=0.0, help="largest invalid fraction of a window")
    p.add_argument(
        "--fractions",
        type=lambda t: [float(v) for v in _csv(t)],
        default=[0.7, 0.15, 0.15],
        help="train,val,test shares of the scene's blocks (default 0.7,0.15,0.15)",
    )
    p.add_argument("--block", type=int, help="split block edge in pixels (default 4 x patch)")
    p.add_argument("--buffer", type=int, default=0, help="extra pixels around windows kept in their split")
    p.add_argument("--out", required=True, help="output patch store (.zarr)")
    p.add_argument("--manifest", help="manifest CSV or .parquet (default: the store's name with .csv)")
    p.add_argument("--overwrite", action="store_true")
    _scheduler_args(p)

    p = sub.add_parser("train", help="train the U-Net on a patch store (validation each epoch)")
    p.add_argument("patches", help="patch store (kerinci-xr sample output)")
    p.add_argument("--out", required=True, help="best checkpoint (.pt); .last.pt and .history.csv beside it")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument(
        "--lr", type=float, default=2e-3, help="peak learning rate of the cosine one-cycle schedule"
    )
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--class-weights", default="inverse_sqrt", choices=["none", "inverse", "inverse_sqrt"])
    p.add_argument("--dice", type=float, default=0.0, help="weight of the Dice term added to cross-entropy")
    p.add_argument("--patience", type=int, default=8, help="epochs without val mIoU gain before stopping")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps")
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--base", type=int, default=32, help="channels of the first U-Net level")
    p.add_argument("--norm", default="batch", choices=["batch", "group", "instance", "none"])
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--loader-workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--no-augment", action="store_true", help="no flips/rotations")
    p.add_argument("--resume", action="store_true", help="continue from <out>.last.pt")
    p.add_argument("--overwrite", action="store_true")

    p = sub.add_parser("predict", help="predict a whole cube: prediction.zarr, COG, class areas, metrics")
    p.add_argument("cube")
    p.add_argument("--model", required=True, help="checkpoint (.pt)")
    p.add_argument("--out", required=True, help="prediction store (.zarr): class and confidence")
    p.add_argument("--cog", help="also write the class map as a Cloud-Optimised GeoTIFF")
    p.add_argument("--areas", help="also write hectares per class (CSV, plus JSON beside it)")
    p.add_argument("--metrics", help="also write whole-scene accuracy against the cube's labels (JSON)")
    p.add_argument("--patches", help="patch store whose split layout gives per-split metrics")
    p.add_argument("--chunk", type=int, default=2048, help="output chunk edge in pixels (default 2048)")
    p.add_argument("--device", default="auto")
    p.add_argument("--probabilities", action="store_true", help="also store per-class probabilities")
    p.add_argument("--overwrite", action="store_true")
    _scheduler_args(p)

    p = sub.add_parser(
        "evaluate", help="accuracy of a model on a patch store split, or of a prediction on a cube"
    )
    p.add_argument("source", help="patch store (with --model) or prediction.zarr (with --cube)")
    p.add_argument("--model", help="checkpoint (.pt), to evaluate on a patch store")
    p.add_argument("--cube", help="cube whose labels a prediction is compared with")
    p.add_argument("--patches", help="with --cube: patch store whose split layout gives per-split metrics")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True, help="metrics JSON")
    p.add_argument("--overwrite", action="store_true")
    _scheduler_args(p)

    p = sub.add_parser("map", help="interactive linked maps of a cube (and prediction) as standalone HTML")
    p.add_argument("cube")
    p.add_argument("--prediction", help="prediction.zarr to show with its errors")
    p.add_argument("--patches", help="patch store whose windows to draw")
    p.add_argument("--max-size", type=int, default=1000, help="longest side of each map in pixels")
    p.add_argument("--out", required=True, help="HTML file (works offline)")
    p.add_argument("--png", help="also write static PNG quick-looks of the maps into this folder")
    p.add_argument("--overwrite", action="store_true")

    p = sub.add_parser("report", help="one HTML page for a run folder: maps, accuracy, areas, training")
    p.add_argument("run_dir")
    p.add_argument("--out", required=True)
    p.add_argument("--max-size", type=int, default=1000)
    p.add_argument("--overwrite", action="store_true")

    p = sub.add_parser("synth", help="write a Kerinci-like scene (Landsat, PALSAR, labels, lc.json)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--height", type=int, default=2751)
    p.add_argument("--width", type=int, default=2692)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-radar", action="store_true", help="skip the PALSAR file")
    p.add_argument("--overwrite", action="store_true")

    p = sub.add_parser("quicklook", help="false-colour and class-map PNGs of a cube")
    p.add_argument("cube")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--max-size", type=int, default=2048, help="longest side of the PNGs in pixels")

    p = sub.add_parser("demo", help="generate a small Kerinci-like scene and run every stage on it")
    p.add_argument("--out", default="kerinci_demo", help="working folder (default ./kerinci_demo)")
    p.add_argument("--size", type=int, default=1500, help="scene edge in pixels (default 1500)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, help="training epochs (default: the demo recipe's 8)")
    p.add_argument("--force", action="store_true", help="redo stages that are up to date")
    _scheduler_args(p)

    p = sub.add_parser("run", help="run the stages of a pipeline file (pipelines/*.toml)")
    p.add_argument("pipeline")
    p.add_argument("--force", action="store_true", help="redo stages that are up to date")
    _scheduler_args(p)
    return ap


def _print_info(summary: dict) -> None:
    print(f"grid      {summary['shape']['y']} x {summary['shape']['x']} (y x)   CRS {summary['crs']}")
    print(f"pixel     {summary['resolution'][0]:.6g} x {summary['resolution'][1]:.6g}")
    print(f"bounds    {', '.join(f'{b:.6f}' for b in summary['bounds'])}")
    print(f"bands     {', '.join(summary['bands'])}")
    print(f"chunks    {summary['chunks']}")
    print(f"valid     {100 * summary['valid_fraction']:.2f} % of pixels")
    if "classes" in summary:
        print(f"\n{'id':>3} {'code':>6}  {'class':<28} {'pixels':>12} {'hectares':>14} {'%':>7}")
        for row in summary["classes"]:
            print(
                f"{row['class_id']:>3} {row['code']:>6}  {row['name'][:28]:<28} "
                f"{row['pixels']:>12,} {row['hectares']:>14,.1f} {row['percent']:>7.2f}"
            )


def _run(args: argparse.Namespace) -> int:
    from .cluster import dask_scheduler

    progress = not args.quiet
    sched = {"workers": getattr(args, "workers", None), "address": getattr(args, "scheduler", None)}
    if args.command == "prepare":
        from .pipeline import prepare

        with dask_scheduler(**sched):
            out = prepare(
                args.image,
                out=args.out,
                labels=args.labels,
                legend=args.legend,
                radar=args.radar,
                bands=args.bands,
                radar_bands=args.radar_bands,
                scale=args.scale,
                offset=args.offset,
                nodata=args.nodata,
                radar_scale=args.radar_scale,
                chunk=args.chunk,
                sensor=args.sensor,
                align_labels=args.align_labels,
                strict=args.strict,
                overwrite=args.overwrite,
                progress=progress,
            )
        print(f"wrote {out}")
    elif args.command == "sample":
        from .pipeline import sample

        with dask_scheduler(**sched):
            store, table = sample(
                args.cube,
                out=args.out,
                manifest=args.manifest,
                per_class=args.per_class,
                patch=args.patch,
                seed=args.seed,
                max_nodata=args.max_nodata,
                fractions=args.fractions,
                block=args.block,
                buffer=args.buffer,
                overwrite=args.overwrite,
                progress=progress,
            )
        print(f"wrote {store}\nwrote {table}")
    elif args.command == "train":
        from .train import TrainConfig, fit

        cfg = TrainConfig(
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            weight_decay=args.weight_decay,
            class_weights=args.class_weights,
            dice=args.dice,
            patience=args.patience,
            seed=args.seed,
            device=args.device,
            depth=args.depth,
            base=args.base,
            norm=args.norm,
            dropout=args.dropout,
            num_workers=args.loader_workers,
            augment=not args.no_augment,
        )
        result = fit(
            args.patches,
            args.out,
            config=cfg,
            resume=args.resume,
            overwrite=args.overwrite,
            progress=progress,
        )
        print(f"best validation mIoU {result['best_miou']:.4f}")
        print(f"wrote {result['best']}\nwrote {result['last']}\nwrote {result['history_csv']}")
    elif args.command == "evaluate":
        from .metrics import format_report, write_report
        from .store import check_output
        from .train import evaluate_store

        check_output(args.out, overwrite=args.overwrite)
        if args.cube:
            from .metrics import evaluate_prediction
            from .pipeline import layout_of, open_prediction
            from .store import cube_legend, open_cube

            cube = open_cube(args.cube)
            if "labels" not in cube:
                raise InvalidInputError(f"{args.cube}: the cube has no labels to compare with.")
            pred = open_prediction(args.source)
            layout = layout_of(args.patches, (cube.sizes["y"], cube.sizes["x"])) if args.patches else None
            with dask_scheduler(**sched):
                report = evaluate_prediction(pred["class"], cube["labels"], cube_legend(cube), layout=layout)
            for area, rep in report.items():
                print(f"\n== {area} ==\n{format_report(rep)}")
        elif args.model:
            report = evaluate_store(args.source, args.model, split=args.split, device=args.device)
            print(format_report(report))
        else:
            raise InvalidInputError("evaluate: pass --model (patch store) or --cube (prediction).")
        print(f"wrote {write_report(report, args.out)}")
    elif args.command == "predict":
        from .pipeline import predict

        with dask_scheduler(**sched):
            outputs = predict(
                args.cube,
                model=args.model,
                out=args.out,
                cog=args.cog,
                areas=args.areas,
                metrics=args.metrics,
                patches=args.patches,
                chunk=args.chunk,
                device=args.device,
                probabilities=args.probabilities,
                overwrite=args.overwrite,
                progress=progress,
            )
        for p in outputs.values():
            print(f"wrote {p}")
    elif args.command == "map":
        from .pipeline import map_page

        for path in map_page(
            args.cube,
            out=args.out,
            prediction=args.prediction,
            patches=args.patches,
            max_size=args.max_size,
            png=args.png,
            overwrite=args.overwrite,
        ):
            print(f"wrote {path}")
    elif args.command == "report":
        from .store import check_output
        from .viz import report_page

        check_output(args.out, overwrite=args.overwrite)
        print(f"wrote {report_page(args.run_dir, args.out, max_size=args.max_size)}")
    elif args.command == "info":
        from .store import cube_summary, open_cube

        with dask_scheduler(**sched):
            summary = cube_summary(open_cube(args.cube))
        if args.json:
            print(json.dumps(summary, indent=2))
        else:
            _print_info(summary)
    elif args.command == "synth":
        from .synthetic import make_kerinci_scene

        files = make_kerinci_scene(
            args.out,
            height=args.height,
            width=args.width,
            seed=args.seed,
            radar=not args.no_radar,
            overwrite=args.overwrite,
        )
        for f in (files.landsat, files.palsar, files.labels, files.legend):
            if f.exists():
                print(f"wrote {f}")
    elif args.command == "quicklook":
        from .pipeline import quicklooks

        for f in quicklooks(args.cube, args.out, max_size=args.max_size):
            print(f"wrote {f}")
    elif args.command in ("demo", "run"):
        from .pipeline import DEMO_CONFIG, run_pipeline

        if args.command == "demo":
            config: object = {
                **DEMO_CONFIG,
                "synth": {
                    **DEMO_CONFIG["synth"],
                    "height": args.size,
                    "width": args.size,
                    "seed": args.seed,
                },
                "train": {**DEMO_CONFIG["train"], **({"epochs": args.epochs} if args.epochs else {})},
            }
            out_dir = Path(args.out)
        else:
            config, out_dir = args.pipeline, None
        with dask_scheduler(**sched):
            results = run_pipeline(
                config,
                force=args.force,
                progress=progress,
                out_dir=out_dir,
                echo=print,  # type: ignore[arg-type]
            )
        print("\nwhat was written:")
        for stage, paths in results.items():
            for p in paths:
                print(f"  {stage:<10} {p}")
        if "report" in results:
            print(f"\nopen the report in a browser: {results['report'][0].resolve()}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``kerinci-xr``; returns the exit status (2 for bad input)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    warnings.simplefilter("default", UserWarning)
    try:
        return _run(args)
    except KerinciError as exc:
        print(f"kerinci-xr {args.command}: error: {exc}", file=sys.stderr)
        return 2
