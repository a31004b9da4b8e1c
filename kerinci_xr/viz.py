"""Maps: interactive HoloViews/Bokeh maps and static PNG quick-looks. Objects are returned, never shown."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ._locations import Location, absolute, as_location, read_bytes
from ._outputs import write_atomic, write_text
from ._products import Kind, locate, read_json
from .cube import cube_legend, cube_view, open_cube, open_store
from .legend import Legend, legend_of
from .patches import manifest_of, open_patches
from .prediction import open_class_map, open_prediction
from .preprocess import false_colour, parse_band_roles
from .vector import read_points

__all__ = [
    "area_bars",
    "area_estimate_bars",
    "class_map",
    "class_map_png",
    "confusion_heatmap",
    "decimate",
    "error_map",
    "error_png",
    "false_colour_map",
    "false_colour_png",
    "linked_panels",
    "patch_windows",
    "report_page",
    "save_html",
    "scene_maps",
]


def decimate(obj: xr.DataArray, *, max_size: int = 2048) -> xr.DataArray:
    """Lazily subsample ``y``/``x`` with one stride so the longer side is at most ``max_size``."""
    step = max(1, int(np.ceil(max(obj.sizes["y"], obj.sizes["x"]) / max_size)))
    return obj.isel(y=slice(None, None, step), x=slice(None, None, step))


#: Space around a quick-look's map, its title and its legend (pixels).
PNG_PAD = 8


def _save_png(
    rgb: np.ndarray,
    path: str | os.PathLike,
    *,
    title: str,
    legend: Sequence[tuple[Sequence[int], str]] = (),
) -> Location:
    """A quick-look: the map at its pixels (never resampled), a title above it and, right of it,
    the legend: one swatch of each colour with its name. Text scales with the map (12-28 px)."""
    from PIL import Image, ImageDraw, ImageFont

    h, w = rgb.shape[:2]
    size = int(np.clip(max(h, w) / 60, 12, 28))
    font = ImageFont.load_default(size=size)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = [measure.textbbox((0, 0), name, font=font)[2] for _, name in legend]
    row = int(size * 1.5)
    legend_w = (2 * PNG_PAD + row + max(text_w)) if legend else 0
    title_h = row + PNG_PAD
    width = max(
        PNG_PAD + w + legend_w + PNG_PAD, PNG_PAD + measure.textbbox((0, 0), title, font=font)[2] + PNG_PAD
    )
    height = max(title_h + h + PNG_PAD, title_h + len(legend) * row + PNG_PAD)
    page = Image.new("RGB", (width, height), "white")
    page.paste(Image.fromarray(rgb), (PNG_PAD, title_h))
    draw = ImageDraw.Draw(page)
    draw.text((PNG_PAD, PNG_PAD // 2), title, fill="black", font=font)
    x0 = 2 * PNG_PAD + w
    for i, (colour, name) in enumerate(legend):
        y0 = title_h + i * row
        box = (x0, y0 + 2, x0 + row - 4, y0 + row - 2)
        draw.rectangle(box, fill=tuple(int(c) for c in colour), outline="grey")
        draw.text((x0 + row + 2, y0 + (row - size) // 2), name, fill="black", font=font)
    return write_atomic(path, lambda tmp: page.save(tmp, format="PNG", optimize=True))


def false_colour_png(
    image: xr.DataArray,
    path: str | os.PathLike,
    *,
    bands: Sequence[str] | None = None,
    percentiles: tuple[float, float] = (2.0, 98.0),
    max_size: int = 2048,
    roles: dict[str, str] | None = None,
) -> Location:
    """Write a stretched false-colour composite (default NIR-SWIR1-SWIR2) as PNG.

    The percentile limits come from the whole scene (streamed); the picture is a strided
    subsample of at most ``max_size`` pixels on its longer side. Invalid pixels are black.
    """
    rgb = false_colour(image, bands=bands, percentiles=percentiles, roles=roles)
    small = decimate(rgb, max_size=max_size).transpose("y", "x", "band").values
    small = np.nan_to_num(small, nan=0.0)
    names = ", ".join(str(b) for b in rgb["band"].values)
    lo, hi = (f"{p:g}" for p in percentiles)
    title = f"false colour {names} as red, green, blue ({lo}-{hi} % stretch; black: no data)"
    return _save_png(np.rint(small * 255).astype(np.uint8), path, title=title)


#: The error quick-look's colours: right, wrong, not compared.
RIGHT, WRONG, NOT_COMPARED = (26, 150, 65), (215, 25, 28), (0, 0, 0)


def error_png(
    reference: xr.DataArray,
    prediction: xr.DataArray,
    path: str | os.PathLike,
    *,
    max_size: int = 2048,
    title: str = "prediction vs labels",
) -> Location:
    """Agreement map as PNG: green where the prediction matches the labels, red where not."""
    ref = np.asarray(decimate(reference, max_size=max_size).values)
    pred = np.asarray(decimate(prediction, max_size=max_size).values)
    rgb = np.zeros((*ref.shape, 3), np.uint8)
    known = (ref > 0) & (pred > 0)
    right = known & (ref == pred)
    rgb[right] = RIGHT
    rgb[known & ~right] = WRONG
    title = f"{title}: {int(right.sum()) / max(int(known.sum()), 1):.1%} of the compared pixels right"
    key = [(RIGHT, "right"), (WRONG, "wrong"), (NOT_COMPARED, "not compared (no label or no class)")]
    return _save_png(rgb, path, title=title, legend=key)


def class_map_png(
    labels: xr.DataArray,
    legend: Legend,
    path: str | os.PathLike,
    *,
    max_size: int = 2048,
    title: str = "classes",
) -> Location:
    """Write a class map (training ids) in the legend's colours as PNG, titled, with a legend of
    the classes it shows (code and name); nodata is black."""
    small = np.asarray(decimate(labels, max_size=max_size).values)
    lut = legend.rgb
    small = np.where(small <= legend.n_classes, small, 0)
    key = [(lut[i], f"{legend.values[i - 1]} {legend.names[i - 1]}") for i in _present_ids(small, legend)]
    if (small == 0).any():
        key.append((lut[0], "no data"))
    return _save_png(lut[small], path, title=title, legend=key)


# ---- interactive maps (holoviews / Bokeh) ---------------------------------------------------
def _hv():
    import holoviews as hv

    if "bokeh" not in hv.Store.renderers:
        hv.extension("bokeh", logo=False)
    return hv


#: The width of every map's frame (the data area, without axes and colour bar), in screen pixels.
MAP_WIDTH = 400  # two maps and their colour bars side by side fit a 1366-pixel laptop screen


def _plain() -> Any:
    """Axis numbers as numbers: UTM northings (9,800,000) and hectares, never 9.8e+6."""
    from bokeh.models import BasicTickFormatter

    return BasicTickFormatter(use_scientific=False)


def _map_frame(width: int) -> dict[str, Any]:
    """Maps side by side share their axes: each gets a frame of the same width, its height from
    the data (one metre or degree is as long across as down), whatever its colour bar's width."""
    return {"frame_width": width, "data_aspect": 1, "xformatter": _plain(), "yformatter": _plain()}


def _present_ids(small: np.ndarray, legend: Legend) -> list[int]:
    ids = np.unique(small)
    return [int(i) for i in ids if 0 < i <= legend.n_classes]


def class_map(
    classes: xr.DataArray,
    legend: Legend,
    *,
    title: str = "classes",
    max_size: int = 1000,
    width: int = MAP_WIDTH,
):
    """A class map (labels or prediction) in the legend's colours, with a legend of class names.

    Hovering shows the class name, training id, original code and the map coordinates. Large
    scenes are decimated (nearest, so every shown pixel keeps a real class and colour) to at
    most ``max_size`` pixels a side; the object is returned, never shown.
    """
    hv = _hv()
    from bokeh.models import CustomJSHover, FixedTicker

    small = decimate(classes, max_size=max_size).compute()
    small = small.where(small <= legend.n_classes, 0).astype(np.uint8)
    ids = _present_ids(small.values, legend)
    # the colour bar holds the classes present, one swatch each: pixels are drawn by their rank
    # among them (0 clear), the hover names them by that rank and shows the real id and code
    rank = np.zeros(legend.n_classes + 1, dtype=np.float32)
    rank[ids] = np.arange(1, len(ids) + 1)
    code = xr.DataArray(np.array([0, *legend.values])[small.values], dims=small.dims, coords=small.coords)
    ds = xr.Dataset(
        {
            "class_id": small.copy(data=rank[small.values]),
            "id": small.astype(np.float32),
            "code": code.astype(np.float32),
        }
    )
    names = ["nodata", *(legend.names[i - 1] for i in ids)]
    name_js = CustomJSHover(code=f"const n = {names!r}; return n[Math.round(value)] ?? '';")
    img = hv.Image(ds, kdims=["x", "y"], vdims=["class_id", "id", "code"])
    n = len(ids)
    return img.opts(
        cmap=["#00000000", *(legend.colors[i - 1] for i in ids)],
        clim=(-0.5, n + 0.5),
        color_levels=n + 1,
        colorbar=True,
        colorbar_opts={
            "ticker": FixedTicker(ticks=list(range(1, n + 1))),
            "major_label_overrides": {k: names[k] for k in range(1, n + 1)},
        },
        clabel="class",
        clipping_colors={"NaN": "#00000000"},
        tools=["hover"],
        hover_tooltips=[
            ("class", "@class_id{custom}"),
            ("id", "@id{0}"),
            ("code", "@code{0}"),
            ("x", "$x{0.00000}"),
            ("y", "$y{0.00000}"),
        ],
        hover_formatters={"@image": name_js},  # holoviews serves the first vdim as "image"
        title=title,
        **_map_frame(width),
        xlabel="x",
        ylabel="y",
    )


def false_colour_map(
    image: xr.DataArray,
    *,
    bands: Sequence[str] | None = None,
    percentiles: tuple[float, float] = (2.0, 98.0),
    max_size: int = 1000,
    title: str = "false colour (NIR-SWIR1-SWIR2)",
    width: int = MAP_WIDTH,
    roles: dict[str, str] | None = None,
):
    """The stretched false-colour composite (default NIR-SWIR1-SWIR2) as an RGB element."""
    hv = _hv()
    rgb = false_colour(image, bands=bands, percentiles=percentiles, roles=roles)
    rgb = decimate(rgb, max_size=max_size).compute()
    vals = np.nan_to_num(rgb.transpose("y", "x", "band").values, nan=0.0)
    x, y = rgb["x"].values, rgb["y"].values
    el = hv.RGB((x, y, vals[..., 0], vals[..., 1], vals[..., 2]), kdims=["x", "y"])
    return el.opts(title=title, **_map_frame(width))


def error_map(reference: xr.DataArray, prediction: xr.DataArray, *, max_size: int = 1000, **opts):
    """Agreement of a prediction with reference labels: green right, red wrong; clear where
    either is 0 (unlabelled, or no prediction under clouds)."""
    hv = _hv()
    ref = decimate(reference, max_size=max_size).compute()
    pred = decimate(prediction, max_size=max_size).compute()
    err = xr.where((ref > 0) & (pred > 0), xr.where(pred == ref, 1.0, 2.0), np.nan).rename("error")
    img = hv.Image(err, kdims=["x", "y"], vdims=["error"])
    from bokeh.models import FixedTicker

    return img.opts(
        cmap=["#{:02x}{:02x}{:02x}".format(*c) for c in (RIGHT, WRONG)],  # the error PNG's colours
        clim=(0.5, 2.5),
        color_levels=2,
        colorbar=True,
        colorbar_opts={
            "ticker": FixedTicker(ticks=[1, 2]),
            "major_label_overrides": {1: "right", 2: "wrong"},
        },
        clabel="map vs labels",
        title=opts.pop("title", "errors (red) vs labels"),
        **_map_frame(opts.pop("width", MAP_WIDTH)),
        tools=["hover"],
    )


def uncertainty_map(
    entropy: xr.DataArray,
    *,
    points: Any = None,
    max_size: int = 1000,
    title: str = "uncertainty: entropy / ln K (0 certain, 1 every class equal)",
    width: int = MAP_WIDTH,
):
    """The prediction's entropy (clear where nothing was mapped), with the points ``suggest``
    chose (a table with x, y, map_name, entropy) on top when given."""
    hv = _hv()
    small = decimate(entropy, max_size=max_size).compute().rename("entropy")
    img = hv.Image(small, kdims=["x", "y"], vdims=["entropy"]).opts(
        cmap="magma",
        clim=(0.0, 1.0),
        colorbar=True,
        clipping_colors={"NaN": "#00000000"},
        tools=["hover"],
        title=title,
        **_map_frame(width),
    )
    if points is None or len(points) == 0:
        return img
    cols = [c for c in ("map_name", "entropy", "margin") if c in points]
    pts = hv.Points(points, kdims=["x", "y"], vdims=cols).opts(
        color="#00e5ff", line_color="black", size=7, marker="circle", tools=["hover"]
    )
    return (img * pts).opts(title=f"{title}; {len(points)} points to label next (suggest)")


def reliability_diagram(record: dict[str, Any], *, width: int = 520, height: int = 460):
    """Accuracy against mean confidence per confidence bin, as trained and with the model's
    temperature, beside the diagonal of perfect calibration; the ECE of each in the legend."""
    hv = _hv()
    curves = [
        hv.Curve([(0, 0), (1, 1)], "confidence", "accuracy", label="perfectly calibrated").opts(
            color="grey", line_dash="dashed"
        )
    ]
    for key, colour, name in (("before", "#d7191c", "as trained"), ("after", "#2c7bb6", "calibrated")):
        rel = record[key]
        pts = [(b["confidence"], b["accuracy"], b["count"]) for b in rel["bins"] if b["count"]]
        label = f"{name} (T = {1.0 if key == 'before' else record['temperature']:.2f}), ECE {rel['ece']:.3f}"
        curves.append(hv.Curve(pts, "confidence", ["accuracy", "pixels"], label=label).opts(color=colour))
        curves.append(
            hv.Scatter(pts, "confidence", ["accuracy", "pixels"], label=label).opts(
                color=colour, size=6, tools=["hover"]
            )
        )
    where = record.get("evaluated_on") or record.get("fitted_on") or "held-out"
    return hv.Overlay(curves).opts(
        title=f"reliability on {record['before']['pixels']:,} {where} pixels (15 bins)",
        width=width,
        height=height,
        xformatter=_plain(),
        yformatter=_plain(),
        legend_position="top_left",
        xlim=(0, 1),
        ylim=(0, 1),
    )


def learning_curves(result: dict[str, Any], *, width: int = 650, height: int = 420):
    """Map accuracy against the number of labels, suggest vs random points (mean and the spread
    over seeds as error bars), from ``benchmarks/bench_active.py``'s results."""
    hv = _hv()
    layers = []
    for arm, colour in (("suggest", "#2c7bb6"), ("random", "#d7191c")):
        rows = [(r[f"{arm}_labels"], r[f"{arm}_oa_mean"], r[f"{arm}_oa_sd"]) for r in result["summary"]]
        label = "suggest (entropy, spread)" if arm == "suggest" else "random points"
        layers.append(
            hv.Curve([(a, b) for a, b, _ in rows], "labels", "overall accuracy", label=label).opts(
                color=colour
            )
        )
        layers.append(hv.ErrorBars(rows, "labels", ["overall accuracy", "sd"]).opts(color=colour))
    return hv.Overlay(layers).opts(
        title=f"active learning: map accuracy vs labels ({len(result['seeds'])} seeds, mean +- sd)",
        width=width,
        height=height,
        xformatter=_plain(),
        yformatter=_plain(),
        legend_position="bottom_right",
    )


def linked_panels(panels: Sequence[Any], *, cols: int = 2):
    """Panels that pan and zoom together (they share the x/y dimensions)."""
    hv = _hv()
    return hv.Layout(list(panels)).opts(shared_axes=True).cols(cols)


def patch_windows(manifest, legend: Legend, transform: Sequence[float], *, background=None):
    """The sampled patch windows as rectangles coloured by class, styled by split.

    ``transform`` is the grid's affine (a, b, c, d, e, f), e.g. a patch store's ``transform``
    attribute. Training windows are solid, validation dashed, test dotted.
    """
    hv = _hv()
    import pandas as pd

    a, _, c, _, e, f = (float(v) for v in list(transform)[:6])
    m = pd.DataFrame(manifest)
    rects = pd.DataFrame(
        {
            "x0": c + m["col_start"] * a,
            "x1": c + m["col_stop"] * a,
            "y0": f + m["row_stop"] * e,
            "y1": f + m["row_start"] * e,
            "class_name": m["class_name"].astype(str),
            "split": m["split"].astype(str),
            "patch_id": m["patch_id"],
            "color": [legend.colors[int(k) - 1] for k in m["class_id"]],
        }
    )
    dash = hv.dim("split").categorize({"train": "solid", "val": "dashed", "test": "dotted"}, default="solid")
    el = hv.Rectangles(
        rects, kdims=["x0", "y0", "x1", "y1"], vdims=["class_name", "split", "patch_id", "color"]
    )
    el = el.opts(fill_alpha=0.0, line_color="color", line_width=2, line_dash=dash, tools=["hover"])
    return background * el if background is not None else el


def confusion_heatmap(
    report: dict[str, Any],
    *,
    normalize: bool = True,
    width: int = 650,
    height: int = 600,
    what: str = "",
):
    """The confusion matrix of an accuracy report as a heat map with class names; ``what`` names
    the pixels it counts (e.g. "test patches"), in the title."""
    hv = _hv()
    cm = np.asarray(report["confusion_matrix"], dtype=np.float64)[1:, 1:]
    names = [c["name"] for c in report["classes"]]
    keep = [i for i in range(len(names)) if cm[i].sum() > 0 or cm[:, i].sum() > 0]
    rows = []
    for i in keep:
        total = cm[i].sum()
        for j in keep:
            v = cm[i, j] / total if normalize and total else cm[i, j]
            rows.append((names[j], names[i], float(v), int(cm[i, j])))
    hm = hv.HeatMap(rows, kdims=["predicted", "reference"], vdims=["share", "pixels"])
    return hm.opts(
        cmap="Blues",
        colorbar=True,
        xrotation=60,
        tools=["hover"],
        width=width,
        height=height,
        title=f"confusion{f' on the {what}' if what else ''} (rows: reference; "
        + ("share of each row)" if normalize else "pixels)"),
        invert_yaxis=True,
    )


def area_bars(table, *, column: str = "hectares", width: int = 650, height: int = 400):
    """Hectares per class as bars in the legend's colours."""
    hv = _hv()
    import pandas as pd

    t = pd.DataFrame(table)
    t = t[t[column] > 0]
    bars = hv.Bars(t, kdims=["name"], vdims=[column, "color"])
    return bars.opts(
        color="color",
        xrotation=60,
        tools=["hover"],
        width=width,
        height=height,
        title=f"{column} per class",
        xlabel="",
        yformatter=_plain(),
    )


def area_estimate_bars(result: dict[str, Any], *, width: int = 700, height: int = 420):
    """Error-adjusted area per class (bars, with the 95 % interval) and the mapped area (diamonds)."""
    hv = _hv()
    rows = [
        (c["name"], c["area_ha"]["estimate"], 1.96 * (c["area_ha"]["se"] or 0.0), c["map_area_ha"])
        for c in result["classes"]
        if c["area_ha"]["estimate"] is not None
    ]
    adjusted = hv.Bars([r[:2] for r in rows], kdims=["classes"], vdims=["hectares"], label="error-adjusted")
    errors = hv.ErrorBars([r[:3] for r in rows], kdims=["classes"], vdims=["hectares", "ci95"])
    mapped = hv.Scatter([(r[0], r[3]) for r in rows], kdims=["classes"], vdims=["hectares"], label="mapped")
    return (
        adjusted.opts(color="#1f77b4", tools=["hover"])
        * errors.opts(line_width=2)
        * mapped.opts(marker="diamond", size=10, color="#333333", tools=["hover"])
    ).opts(
        xrotation=60,
        width=width,
        height=height,
        xlabel="",
        yformatter=_plain(),
        legend_position="top_right",
        title="error-adjusted area with 95 % CI, and mapped area (hectares)",
    )


def _standalone(model: Any, title: str) -> str:
    """Bokeh HTML with every script inline, so the page works offline.

    Bokeh inlines its own JavaScript; Panel (imported by holoviews) adds a script tag for a
    file it serves from ``static/extensions/panel/`` (a Panel server path, absent from a plain
    file): its content is inlined from Panel's package, or the tag dropped if Panel lacks it.
    """
    import re

    from bokeh.embed import file_html
    from bokeh.resources import INLINE

    html = file_html(model, INLINE, title)

    def inline(match: re.Match) -> str:
        try:
            import panel

            local = Path(panel.__file__).parent / "dist" / match.group(1)
            code = local.read_text(encoding="utf-8")
        except (ImportError, OSError):
            return ""
        return '<script type="text/javascript">' + code.replace("</script", "<\\/script") + "</script>"

    return re.sub(r'<script[^>]*src="static/extensions/panel/([^"]+)"[^>]*></script>', inline, html)


def save_html(obj: Any, path: str | os.PathLike, *, title: str = "kerinci_xr") -> Location:
    """Write a standalone HTML file with every resource inline (it works offline)."""
    hv = _hv()
    return write_text(path, _standalone(hv.render(obj, backend="bokeh"), title))


# ---- pages: the map and the run report ------------------------------------------------------
def scene_maps(
    cube: xr.Dataset,
    *,
    prediction: xr.DataArray | None = None,
    patches: xr.Dataset | None = None,
    entropy: xr.DataArray | None = None,
    suggestions: Any = None,
    max_size: int = 1000,
):
    """Linked panels of a scene: composite, labels, prediction, errors, uncertainty (with the
    suggested points), sampled windows."""
    legend = legend_of(cube) if cube.attrs.get("legend") else None
    panels = []
    fc = false_colour_map(cube["image"], max_size=max_size, roles=roles_of(cube))
    panels.append(fc)
    if "labels" in cube and legend is not None:
        panels.append(class_map(cube["labels"], cube_legend(cube), title="labels", max_size=max_size))
    if prediction is not None:
        plg = legend or legend_of(prediction)
        panels.append(class_map(prediction, plg, title="prediction", max_size=max_size))
        if "labels" in cube:
            panels.append(error_map(cube["labels"], prediction, max_size=max_size))
    if entropy is not None:
        panels.append(
            uncertainty_map(
                entropy.where(prediction > 0) if prediction is not None else entropy,
                points=suggestions,
                max_size=max_size,
            )
        )
    if patches is not None and legend is not None:
        panels.append(
            patch_windows(manifest_of(patches), legend, patches.attrs["transform"], background=fc).opts(
                title="sampled windows (train solid, val dashed, test dotted)"
            )
        )
    return linked_panels(panels)


def roles_of(cube: xr.Dataset, extra: Sequence[str] | None = None) -> dict[str, str] | None:
    """The band roles a cube records, with ``ROLE=BAND`` pairs over them; ``None`` when unknown."""
    names = [str(b) for b in cube["band"].values]
    roles = {k: v for k, v in json.loads(cube.attrs.get("band_roles") or "{}").items() if v in names}
    roles |= parse_band_roles(extra, names)
    return roles or None


#: Integer columns printed as they are (codes and counters, not quantities: "2001", not "2,001").
_PLAIN_INTS = {"code", "class_id", "id", "epoch", "fold", "seed", "round"}


def _cell(key: str, v: Any) -> str:
    """A table cell: codes plain, hectares to 0.1, percents to 0.1, a learning rate with its
    significant digits (not "0.000"), other numbers to 3 decimals, counts with separators."""
    import numbers

    if v is None or (
        isinstance(v, numbers.Real) and not isinstance(v, numbers.Integral) and not np.isfinite(float(v))
    ):
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, numbers.Integral):
        return str(int(v)) if key in _PLAIN_INTS else f"{int(v):,}"
    if isinstance(v, numbers.Real):
        x = float(v)
        if key == "lr" or key.endswith("_lr"):
            return f"{x:.3g}"
        if "hectare" in key or key.endswith("_ha") or key == "ha":
            return f"{x:,.1f}"
        if "percent" in key:
            return f"{x:.1f}"
        return f"{x:,.3f}"
    return str(v)


def _html_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]], *, colors: bool = False) -> str:
    from html import escape

    head = "".join(f"<th>{escape(label)}</th>" for _, label in columns)
    body = []
    for r in rows:
        cells = []
        for key, _ in columns:
            text = _cell(key, r.get(key))
            if colors and key == "name" and r.get("color"):
                swatch = f"display:inline-block;width:12px;height:12px;background:{escape(r['color'])}"
                text = f'<span style="{swatch};margin-right:6px"></span>{escape(text)}'
            else:
                text = escape(text)
            cells.append(f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        '<table style="border-collapse:collapse;font:13px sans-serif" border="1" cellpadding="4">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def report_page(
    out: str | Path,
    *,
    cube: str | Path,
    prediction: str | Path | None = None,
    patches: str | Path | None = None,
    metrics: dict[str, str | Path] | None = None,
    areas: str | Path | None = None,
    history: str | Path | None = None,
    assessment: str | Path | None = None,
    change: str | Path | None = None,
    change_summary: str | Path | None = None,
    crossval: str | Path | None = None,
    suggestions: str | Path | None = None,
    learning: str | Path | None = None,
    max_size: int = 1000,
) -> Path:
    """One standalone HTML page: maps, accuracy, confusion, areas and training history.

    Parameters
    ----------
    out
        The HTML file (works offline).
    cube, prediction, patches
        The cube, prediction store and patch store to map.
    metrics
        Accuracy reports (JSON from ``evaluate`` or ``predict --metrics``) by section title.
    areas
        Class areas (CSV from ``predict --areas``).
    history
        Training history (CSV beside the checkpoint, ``<model stem>.history.csv``).
    assessment
        Accuracy and error-adjusted areas from a sample (JSON from ``assess``).
    change, change_summary
        A change store and its summary (JSON), from ``change``.
    crossval
        A cross-validation folder (``crossval``): the models compared on identical folds.
    suggestions
        Points ``suggest`` chose to label next, shown on the uncertainty map.
    learning
        Learning curves of ``benchmarks/bench_active.py`` (its results JSON).
    """

    import pandas as pd
    from bokeh.layouts import column
    from bokeh.models import Div

    hv = _hv()
    ds = cube_view(open_cube(cube))
    layers = open_prediction(prediction) if prediction is not None else None
    pred = layers["classes"] if layers is not None else None
    entropy = layers["entropy"] if layers is not None and "entropy" in layers else None
    store = open_patches(patches) if patches is not None else None
    points = None
    if suggestions is not None:  # its x and y are in the map's CRS
        table = read_points(suggestions, Kind.SUGGESTIONS)[0]
        points = pd.DataFrame(table.drop(columns="geometry", errors="ignore"))
    parts: list[Any] = [Div(text=f"<h1>kerinci_xr report</h1><p>{absolute(cube)}</p>")]
    maps = scene_maps(
        ds, prediction=pred, patches=store, entropy=entropy, suggestions=points, max_size=max_size
    )
    parts.append(hv.render(maps))
    metric_cols = [
        ("name", "class"),
        ("support", "support"),
        ("producers_accuracy", "PA"),
        ("users_accuracy", "UA"),
        ("f1", "F1"),
        ("iou", "IoU"),
    ]
    for title, path in (metrics or {}).items():
        data = read_json(path, Kind.METRICS)
        reports = {k: v for k, v in data.items() if isinstance(v, dict) and "classes" in v} or {"": data}
        for area, rep in reports.items():
            head = (
                f"<h2>Accuracy: {title} {area}</h2><p>overall accuracy {rep['overall_accuracy']}, "
                f"kappa {rep['kappa']}, mean IoU {rep['mean_iou']}, {rep['samples']:,} independent samples "
                f"({rep.get('sample_unit', 'pixel')}s; confusion matrix rows = reference, columns = map)</p>"
            )
            rows = [c for c in rep["classes"] if c["support"] or c["users_accuracy"] is not None]
            parts.append(Div(text=head + _html_table(rows, metric_cols)))
        area = "test" if "test" in reports else next(iter(reports))
        last = reports[area]
        if last["samples"]:
            what = f"{title}, {area} area" if area else title
            parts.append(hv.render(confusion_heatmap(last, what=what)))
        if "calibration" in data:
            parts.append(Div(text=_calibration_text(data["calibration"])))
            parts.append(hv.render(reliability_diagram(data["calibration"])))
    if areas is not None:
        table = pd.read_csv(locate(areas, Kind.AREAS))
        cols = [("name", "class"), ("code", "code")] + [
            (c, c.replace("_", " ")) for c in table.columns if c.startswith(("hectares", "percent"))
        ]
        parts.append(
            Div(text="<h2>Class areas</h2>" + _html_table(table.to_dict("records"), cols, colors=True))
        )
        column_name = "hectares_predicted" if "hectares_predicted" in table else "hectares"
        parts.append(hv.render(area_bars(table, column=column_name)))
    if assessment is not None:
        parts += _assessment_parts(read_json(assessment, Kind.ASSESSMENT))
    if change is not None:
        parts += _change_parts(change, change_summary, prediction, max_size=max_size)
    if crossval is not None:
        parts += crossval_parts(crossval)
    if learning is not None:
        result = read_json(learning, Kind.LEARNING_CURVES)
        parts.append(Div(text=_learning_text(result)))
        parts.append(hv.render(learning_curves(result)))
    if history is not None:
        h = pd.read_csv(locate(history, Kind.HISTORY))
        cols = [(c, c.replace("_", " ")) for c in h.columns]
        parts.append(Div(text="<h2>Training</h2>" + _html_table(h.to_dict("records"), cols)))
    return write_text(out, _standalone(column(*parts), "kerinci_xr report"))


def _calibration_text(record: dict[str, Any]) -> str:
    b, a = record["before"], record["after"]
    where = escape_text(record.get("evaluated_on") or "held-out")
    fitted = escape_text(record.get("fitted_on") or "validation")
    return (
        f"<h2>Calibration</h2><p>On {b['pixels']:,} {where} pixels the expected calibration error is "
        f"{b['ece']:.3f} as trained and {a['ece']:.3f} with the temperature {record['temperature']:.3f} "
        f"fitted on the {fitted} split (predict applies it: the confidence, margin and entropy layers are "
        "calibrated; the classes do not change).</p>"
    )


def _learning_text(result: dict[str, Any]) -> str:
    last = result["summary"][-1]
    rounds, scene = len(result["summary"]) - 1, escape_text(result.get("scene", ""))
    return (
        f"<h2>Active learning</h2><p>{scene}: {result['start_per_class']} points per class, then {rounds} "
        f"rounds of {result['add_per_round']} points chosen by suggest or at random; after the last round "
        f"overall accuracy {last['suggest_oa_mean']:.3f} +- {last['suggest_oa_sd']:.3f} (suggest) vs "
        f"{last['random_oa_mean']:.3f} +- {last['random_oa_sd']:.3f} (random), over "
        f"{len(result['seeds'])} seeds.</p>"
    )


def _assessment_parts(result: dict[str, Any]) -> list[Any]:
    """The report's section on a sample-based assessment: a table and the area bars."""
    from bokeh.models import Div

    hv = _hv()

    def pm(e: dict[str, Any], fmt: str) -> str:
        if e["estimate"] is None:
            return "-"
        return format(e["estimate"], fmt) + ("" if e["se"] is None else f" ± {format(1.96 * e['se'], fmt)}")

    rows = [
        {
            "name": c["name"],
            "n": c["sample_size"],
            "mapped": f"{c['map_area_ha']:,.1f}",
            "adjusted": pm(c["area_ha"], ",.1f"),
            "ua": pm(c["users_accuracy"], ".3f"),
            "pa": pm(c["producers_accuracy"], ".3f"),
        }
        for c in result["classes"]
    ]
    cols = [
        ("name", "class"),
        ("n", "sample units"),
        ("mapped", "mapped ha"),
        ("adjusted", "error-adjusted ha"),
        ("ua", "user's accuracy"),
        ("pa", "producer's accuracy"),
    ]
    simulated = result["reference"].get("simulated_from")
    head = (
        "<h2>Accuracy and area from the sample</h2>"
        f"<p>{result['estimator']}; {result['sample_size']:,} sample units; overall accuracy "
        f"{pm(result['overall_accuracy'], '.3f')} (95 % CI)"
        + (f"; the reference was simulated from {simulated}" if simulated else "")
        + "</p>"
    )
    return [Div(text=head + _html_table(rows, cols)), hv.render(area_estimate_bars(result))]


def crossval_parts(folder: str | Path) -> list[Any]:
    """The report's model comparison (``crossval``): per model the pooled figures and the fold
    mean with its interval, the paired differences, the model to use and why, the folds' flags,
    and a chart of every model's fold scores beside its pooled accuracy."""
    import pandas as pd
    from bokeh.models import Div

    hv = _hv()
    report = as_location(locate(folder, Kind.CROSSVAL)) / "crossval.json"
    data = json.loads(read_bytes(report, "cross-validation report"))

    def interval(s: dict[str, Any]) -> str:
        if s["mean"] is None:
            return "-"
        ci = f" [{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}]" if s["ci95"] else ""
        return f"{s['mean']:.3f}{ci} ({s['folds']} folds)"

    def pooled(m: dict[str, Any], key: str) -> str:
        v, ci = m["pooled"][key], (m["pooled"].get("ci95") or {}).get(key)
        return "-" if v is None else f"{v:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")

    rows = [
        {
            "model": name,
            "oa": pooled(m, "overall_accuracy"),
            "kappa": pooled(m, "kappa"),
            "f1": pooled(m, "macro_f1"),
            "samples": m["pooled"]["samples"],
            "fold_oa": interval(m["summary"]["overall_accuracy"]),
            "flagged": ", ".join(str(f) for f in m["folds_flagged"]) or "none",
        }
        for name, m in data["models"].items()
    ]
    cols = [
        ("model", "model"),
        ("oa", "pooled OA [95 % CI]"),
        ("kappa", "pooled kappa [95 % CI]"),
        ("f1", "pooled macro F1 [95 % CI]"),
        ("samples", "test samples"),
        ("fold_oa", "OA, mean of unflagged folds [95 % CI]"),
        ("flagged", "flagged folds"),
    ]
    diffs = [
        {
            "pair": f"{d['a']} - {d['b']}",
            "d": f"{d['estimate']:+.3f}",
            "ci": f"{d['ci95'][0]:+.3f} to {d['ci95'][1]:+.3f}",
        }
        for d in data.get("differences", [])
    ]
    scored = (
        f"{data['scored']:,} of {data['labelled_pixels']:,} labelled pixels scored, each once"
        + (f"; {data['on_nodata']:,} on image nodata left out" if data.get("on_nodata") else "")
        if "scored" in data
        else data.get("sample_unit", "")
    )
    rec = data.get("recommendation") or {}
    head = (
        "<h2>Model comparison (cross-validation on identical folds)</h2>"
        f"<p>{escape_text(scored)}. Pooled: every fold's test pixels in one confusion matrix.</p>"
    )
    parts: list[Any] = [Div(text=head + _html_table(rows, cols))]
    if diffs:
        text = "<p>Paired differences in overall accuracy (bootstrap over test pixels within folds):</p>"
        text += _html_table(diffs, [("pair", "models"), ("d", "difference"), ("ci", "95 % interval")])
        parts.append(Div(text=text))
    if rec:
        parts.append(Div(text=f"<p><b>Use {escape_text(rec['model'])}</b>: {escape_text(rec['why'])}.</p>"))
    folds = pd.DataFrame(data["folds"])
    fold_cols = [
        ("fold", "fold"),
        ("model", "model"),
        ("overall_accuracy", "OA"),
        ("test_samples", "test samples"),
        ("test_classes", "classes tested"),
        ("flags", "flags"),
    ]
    records = folds.astype(object).where(folds.notna(), None).to_dict("records")  # a skipped fold: "-"
    parts.append(Div(text="<p>Per fold:</p>" + _html_table(records, fold_cols)))
    points = hv.Scatter(folds, kdims=["model"], vdims=["overall_accuracy", "fold"]).opts(
        size=8, color="#555555", tools=["hover"]
    )
    oa = [m["pooled"]["overall_accuracy"] for m in data["models"].values()]
    bars = hv.Bars(
        pd.DataFrame({"model": list(data["models"]), "pooled": oa}), kdims=["model"], vdims=["pooled"]
    )
    bars = bars.opts(color="#9ecae1")
    chart = (bars * points).opts(
        width=600,
        height=360,
        yformatter=_plain(),
        ylim=(0, 1),
        ylabel="overall accuracy",
        xlabel="",
        title="overall accuracy: pooled (bars) and per fold (points)",
    )
    parts.append(hv.render(chart))
    return parts


def _change_parts(
    change: str | Path, summary: str | Path | None, prediction: str | Path | None, *, max_size: int
) -> list[Any]:
    """The report's change section: both dates' maps, the from-to map, the matrix, gross/net bars."""
    import pandas as pd
    from bokeh.models import Div

    hv = _hv()
    store = open_store(change, Kind.CHANGE, require="transition")
    legend = legend_of(store)
    ids, tl = open_class_map(change)
    panels = []
    if prediction is not None:
        both = open_prediction(prediction, all_dates=True)["classes"]
        if "time" in both.dims:
            panels += [
                class_map(both.sel(time=t), legend, title=f"map {str(t)[:10]}", max_size=max_size)
                for t in both["time"].values
            ]
    panels.append(class_map(ids, tl, title="from-to map", max_size=max_size))
    parts: list[Any] = [
        Div(
            text=f"<h2>Land-cover change</h2><p>{escape_text(store.attrs.get('before'))} to "
            f"{escape_text(store.attrs.get('after'))}</p>"
        ),
        hv.render(linked_panels(panels)),
    ]
    if summary is not None:
        data = read_json(summary, Kind.CHANGE_SUMMARY)
        table = pd.DataFrame(data["transitions"])
        changed = table[table["from_id"] != table["to_id"]]
        if len(changed):
            matrix = changed.pivot_table(
                index="from_name", columns="to_name", values="hectares", aggfunc="sum"
            )
            rows = [
                {"from": k, **{c: (f"{v:,.1f}" if v == v else "") for c, v in r.items()}}
                for k, r in matrix.iterrows()
            ]
            cols = [("from", "from \\ to (ha)")] + [(c, c) for c in matrix.columns]
            parts.append(
                Div(
                    text=(
                        f"<p>{data['pixels_changed']:,} of {data['pixels_compared']:,} pixels changed "
                        f"({data['hectares_changed']:,.1f} ha); {data['pixels_excluded']:,} without a "
                        f"class at either date.</p>" + _html_table(rows, cols)
                    )
                )
            )
        net = pd.DataFrame(data["classes"])
        long = net.melt(
            id_vars=["name"],
            value_vars=["gross_loss", "gross_gain", "net_change"],
            var_name="measure",
            value_name="hectares",
        )
        long.loc[long["measure"] == "gross_loss", "hectares"] *= -1
        long["measure"] = long["measure"].str.replace("_", " ")
        bars = hv.Bars(long, kdims=["name", "measure"], vdims=["hectares"]).opts(
            xrotation=60,
            width=800,
            height=420,
            tools=["hover"],
            xlabel="",
            ylabel="hectares",
            yformatter=_plain(),
            multi_level=False,
            title="gross loss (negative), gross gain and net change per class (ha)",
            color="measure",
            cmap={"gross loss": "#d7191c", "gross gain": "#1a9641", "net change": "#2b83ba"},
            show_legend=True,
            legend_position="top_right",
        )
        parts.append(hv.render(bars))
    return parts


def escape_text(value: Any) -> str:
    from html import escape

    return escape(str(value or ""))
