"""Maps: interactive hvplot/holoviews maps and static PNG quick-looks. Objects are returned, never shown."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .legend import Legend

__all__ = [
    "area_bars",
    "class_map",
    "class_map_png",
    "confusion_heatmap",
    "decimate",
    "error_map",
    "false_colour_map",
    "false_colour_png",
    "linked_panels",
    "patch_windows",
    "save_html",
]


def decimate(obj: xr.DataArray, *, max_size: int = 2048) -> xr.DataArray:
    """Lazily subsample ``y``/``x`` with one stride so the longer side is at most ``max_size``."""
    step = max(1, int(np.ceil(max(obj.sizes["y"], obj.sizes["x"]) / max_size)))
    return obj.isel(y=slice(None, None, step), x=slice(None, None, step))


def _save_png(rgb: np.ndarray, path: str | Path) -> Path:
    from PIL import Image

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(rgb).save(tmp, format="PNG", optimize=True)
    tmp.replace(path)
    return path


def false_colour_png(
    image: xr.DataArray,
    path: str | Path,
    *,
    bands: Sequence[str] | None = None,
    percentiles: tuple[float, float] = (2.0, 98.0),
    max_size: int = 2048,
) -> Path:
    """Write a stretched false-colour composite (default NIR-SWIR1-SWIR2) as PNG.

    The percentile limits come from the whole scene (streamed); the picture is a strided
    subsample of at most ``max_size`` pixels on its longer side. Invalid pixels are black.
    """
    from .preprocess import false_colour

    rgb = false_colour(image, bands=bands, percentiles=percentiles)
    small = decimate(rgb, max_size=max_size).transpose("y", "x", "band").values
    small = np.nan_to_num(small, nan=0.0)
    return _save_png(np.rint(small * 255).astype(np.uint8), path)


def class_map_png(labels: xr.DataArray, legend: Legend, path: str | Path, *, max_size: int = 2048) -> Path:
    """Write a class map (training ids) in the legend's colours as PNG; nodata is black."""
    small = np.asarray(decimate(labels, max_size=max_size).values)
    lut = legend.rgb
    small = np.where(small <= legend.n_classes, small, 0)
    return _save_png(lut[small], path)


# ---- interactive maps (holoviews / Bokeh) ---------------------------------------------------
def _hv():
    import holoviews as hv
    import hvplot.xarray  # noqa: F401  (registers .hvplot)

    if "bokeh" not in hv.Store.renderers:
        hv.extension("bokeh", logo=False)
    return hv


def _present_ids(small: np.ndarray, legend: Legend) -> list[int]:
    ids = np.unique(small)
    return [int(i) for i in ids if 0 < i <= legend.n_classes]


def class_map(
    classes: xr.DataArray,
    legend: Legend,
    *,
    title: str = "classes",
    max_size: int = 1000,
    width: int = 600,
    height: int = 560,
):
    """A class map (labels or prediction) in the legend's colours, with a legend of class names.

    Hovering shows the class name, training id, original code and the map coordinates. Large
    scenes are decimated (nearest, so every shown pixel keeps a real class and colour) to at
    most ``max_size`` pixels a side; the object is returned, never shown.
    """
    hv = _hv()
    from bokeh.models import CustomJSHover, FixedTicker

    small = decimate(classes, max_size=max_size).compute()
    small = small.where(small <= legend.n_classes, 0).astype(np.uint8).rename("class_id")
    code = xr.DataArray(np.array([0, *legend.values])[small.values], dims=small.dims, coords=small.coords)
    ds = xr.Dataset({"class_id": small.astype(np.float32), "code": code.astype(np.float32)})
    names = ["nodata", *legend.names]
    name_js = CustomJSHover(code=f"const n = {names!r}; return n[Math.round(value)] ?? '';")
    img = hv.Image(ds, kdims=["x", "y"], vdims=["class_id", "code"])
    ids = _present_ids(small.values, legend)
    cmap = ["#00000000", *legend.colors]
    return img.opts(
        cmap=cmap,
        clim=(-0.5, legend.n_classes + 0.5),
        color_levels=legend.n_classes + 1,
        colorbar=True,
        colorbar_opts={
            "ticker": FixedTicker(ticks=ids),
            "major_label_overrides": {i: names[i] for i in ids},
            "title": "class",
        },
        clipping_colors={"NaN": "#00000000"},
        tools=["hover"],
        hover_tooltips=[
            ("class", "@class_id{custom}"),
            ("id", "@class_id{0}"),
            ("code", "@code{0}"),
            ("x", "$x{0.00000}"),
            ("y", "$y{0.00000}"),
        ],
        hover_formatters={"@class_id": name_js},
        title=title,
        width=width,
        height=height,
        data_aspect=1,
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
    width: int = 600,
    height: int = 560,
):
    """The stretched false-colour composite (default NIR-SWIR1-SWIR2) as an RGB element."""
    hv = _hv()
    from .preprocess import false_colour

    rgb = decimate(false_colour(image, bands=bands, percentiles=percentiles), max_size=max_size).compute()
    vals = np.nan_to_num(rgb.transpose("y", "x", "band").values, nan=0.0)
    x, y = rgb["x"].values, rgb["y"].values
    el = hv.RGB((x, y, vals[..., 0], vals[..., 1], vals[..., 2]), kdims=["x", "y"])
    return el.opts(title=title, width=width, height=height, data_aspect=1)


def error_map(reference: xr.DataArray, prediction: xr.DataArray, *, max_size: int = 1000, **opts):
    """Agreement of a prediction with reference labels: green right, red wrong; clear where
    either is 0 (unlabelled, or no prediction under clouds)."""
    hv = _hv()
    ref = decimate(reference, max_size=max_size).compute()
    pred = decimate(prediction, max_size=max_size).compute()
    err = xr.where((ref > 0) & (pred > 0), xr.where(pred == ref, 1.0, 2.0), np.nan).rename("error")
    img = hv.Image(err, kdims=["x", "y"], vdims=["error"])
    return img.opts(
        cmap=["#1a9641", "#d7191c"],
        clim=(0.5, 2.5),
        color_levels=2,
        colorbar=False,
        title=opts.pop("title", "errors (red) vs labels"),
        data_aspect=1,
        width=opts.pop("width", 600),
        height=opts.pop("height", 560),
        tools=["hover"],
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


def confusion_heatmap(report: dict[str, Any], *, normalize: bool = True, width: int = 650, height: int = 600):
    """The confusion matrix of an accuracy report as a heat map with class names."""
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
        title="confusion (rows: reference)",
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
    )


def save_html(obj: Any, path: str | Path, *, title: str = "kerinci_xr") -> Path:
    """Write a standalone HTML file with every resource inline (it works offline)."""
    hv = _hv()
    from bokeh.embed import file_html
    from bokeh.resources import INLINE

    path = Path(path)
    model = hv.render(obj, backend="bokeh")
    html = file_html(model, INLINE, title)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(path)
    return path
