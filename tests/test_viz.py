import functools
import http.server
import io
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from affine import Affine

from kerinci_xr.cli import main
from kerinci_xr.synthetic import KLHK_LEGEND
from kerinci_xr.viz import area_bars, class_map, confusion_heatmap, false_colour_map, patch_windows

FOREST, WATER = KLHK_LEGEND.id_of(2001), KLHK_LEGEND.id_of(5001)


@pytest.fixture(scope="module")
def halves(tmp_path_factory):
    """A cube whose left half is forest and right half water (known classes under the mouse)."""
    from kerinci_xr.cube import write_cube

    h, w = 240, 300
    rng = np.random.default_rng(0)
    labels = np.full((h, w), FOREST, np.uint8)
    labels[:, w // 2 :] = WATER
    image = rng.random((8, h, w)).astype(np.float32) * 0.3 + labels[None] * 0.01
    tr = Affine(30, 0, 500000, 0, -30, 9800000)
    ds = (
        xr.Dataset(
            {
                "image": (("band", "y", "x"), image),
                "labels": (("y", "x"), labels),
                "valid": (("y", "x"), np.ones((h, w), bool)),
            },
            coords={
                "band": ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B9"],
                "y": tr.f + (np.arange(h) + 0.5) * tr.e,
                "x": tr.c + (np.arange(w) + 0.5) * tr.a,
            },
        )
        .rio.write_crs(32748)
        .rio.write_transform(tr)
    )
    ds.attrs = {"legend": KLHK_LEGEND.to_json(), "band_roles": "{}"}
    root = tmp_path_factory.mktemp("viz")
    return write_cube(ds.chunk({"y": 128, "x": 128}), root / "cube.zarr")


def test_class_map__legend_colours_and_names(halves):
    import holoviews as hv

    from kerinci_xr.cube import open_cube

    el = class_map(open_cube(halves)["labels"], KLHK_LEGEND)
    opts = (
        hv.Store.lookup_options("bokeh", el, "plot").kwargs
        | hv.Store.lookup_options("bokeh", el, "style").kwargs
    )
    # the colour bar: one swatch per class present (not all 22 of the legend), each named
    assert opts["cmap"][1:] == [KLHK_LEGEND.colors[FOREST - 1], KLHK_LEGEND.colors[WATER - 1]]
    assert opts["clim"] == (-0.5, 2.5)
    labels = opts["colorbar_opts"]["major_label_overrides"]
    assert labels == {1: "Primary dryland forest", 2: "Open water"}
    fig = hv.render(el)
    mapper = fig.select_one({"type": __import__("bokeh").models.LinearColorMapper})
    assert len(mapper.palette) == 3
    assert list(mapper.palette)[1].upper().startswith("#006400")
    assert list(mapper.palette)[2].upper().startswith("#87CEFA")
    ids = el.dimension_values("id")  # the hover's training ids stay the legend's
    assert set(np.unique(ids)) <= {0, FOREST, WATER} and {FOREST, WATER} <= set(np.unique(ids))


def test_other_plots__colours_from_the_legend(halves):
    import holoviews as hv
    import pandas as pd

    from kerinci_xr.cube import open_cube
    from kerinci_xr.metrics import accuracy_report, class_areas, confusion_matrix

    cube = open_cube(halves)
    assert isinstance(false_colour_map(cube["image"]), hv.RGB)
    lab = cube["labels"].values
    rep = accuracy_report(confusion_matrix(lab, lab, KLHK_LEGEND.n_classes), KLHK_LEGEND)
    hm = confusion_heatmap(rep)
    assert set(hm.dimension_values("reference")) == {"Primary dryland forest", "Open water"}
    bars = area_bars(class_areas(cube["labels"], KLHK_LEGEND))
    assert set(bars.dimension_values("color")) == {"#006400", "#87CEFA"}
    m = pd.DataFrame(
        {
            "patch_id": [0, 1],
            "split": ["train", "test"],
            "class_id": [FOREST, WATER],
            "class_name": ["Primary dryland forest", "Open water"],
            "row_start": [0, 10],
            "row_stop": [32, 42],
            "col_start": [0, 200],
            "col_stop": [32, 232],
        }
    )
    rects = patch_windows(m, KLHK_LEGEND, list(cube.rio.transform())[:6])
    assert list(rects.dimension_values("color")) == ["#006400", "#87CEFA"]
    assert rects.dimension_values("x0")[1] == pytest.approx(500000 + 200 * 30)


def test_report_tables__codes_plain_hectares_and_learning_rates_readable():
    """Codes were printed "2,001", hectares with 3 decimals and a learning rate of 3e-4 as
    "0.000" (#27)."""
    from kerinci_xr.viz import _html_table

    row = {"code": np.int64(2001), "hectares": 1234.5678, "lr": 0.00034, "percent": 12.3456, "oa": 0.97}
    row |= {"pixels": np.int64(123456), "epoch": 3, "area_ha": 5.04, "missing": float("nan")}
    html = _html_table([row], [(k, k) for k in row])
    cells = [c.split("</td>")[0] for c in html.split("<td>")[1:]]
    assert cells == ["2001", "1,234.6", "0.00034", "12.3", "0.970", "123,456", "3", "5.0", "-"]


# ---- in a real browser -----------------------------------------------------------------
def _chromium():
    chrome, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chrome and driver):
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs them)")
    return chrome, driver


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chrome, driver = _chromium()
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,1300",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(driver), options=opts)
    yield d
    d.quit()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("www")
    handler = functools.partial(_QuietHandler, directory=str(root))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


_FRAMES = """
const out = []; const seen = new Set();
function walk(v) { if (!v || seen.has(v)) return; seen.add(v);
  if (v.frame && v.canvas_view) { const r = v.canvas_view.el.getBoundingClientRect(); const b = v.frame.bbox;
    const xr = v.model.x_range, yr = v.model.y_range;
    out.push({title: v.model.title ? v.model.title.text : '', x: r.x + b.left, y: r.y + b.top, w: b.width, h: b.height,
              xs: xr ? Math.abs(xr.end - xr.start) : 0, ys: yr ? Math.abs(yr.end - yr.start) : 0}); }
  for (const c of (v.child_views ?? [])) walk(c); }
for (const v of Object.values(Bokeh.index)) walk(v); return out;"""

_TOOLTIPS = """
function all(root, out) { for (const el of root.querySelectorAll('*')) { out.push(el); if (el.shadowRoot) all(el.shadowRoot, out); } return out; }
return all(document, []).filter(e => String(e.className).includes('bk-tooltip-content')).map(e => e.textContent).join(' | ');"""


def _load(browser, url):
    browser.get(url)
    for _ in range(100):
        frames = browser.execute_script(
            "return window.Bokeh && Bokeh.index ? 1 : 0"
        ) and browser.execute_script(_FRAMES)
        if frames:
            return frames
        time.sleep(0.1)
    raise AssertionError(f"{url}: no Bokeh plot rendered")


def _hover(browser, frame, fx, fy) -> str:
    from selenium.webdriver.common.action_chains import ActionChains

    x, y = int(frame["x"] + fx * frame["w"]), int(frame["y"] + fy * frame["h"])
    a = ActionChains(browser)
    a.w3c_actions.pointer_action.move_to_location(x - 3, y - 3)  # enter the canvas, then move in it
    a.w3c_actions.pointer_action.move_to_location(x, y)
    a.perform()
    for _ in range(30):
        text = browser.execute_script(_TOOLTIPS)
        if "class:" in text:
            return text
        time.sleep(0.1)
    return text


def _not_blank(browser) -> None:
    from PIL import Image

    shot = np.asarray(Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("RGB"), dtype=np.int16)
    assert shot.std() > 10
    assert len(np.unique(shot.reshape(-1, 3), axis=0)) > 20


def _severe(browser) -> list[str]:
    return [
        m["message"]
        for m in browser.get_log("browser")
        if m["level"] == "SEVERE" and "favicon.ico" not in m["message"]
    ]


def test_map_html__renders_offline_with_hover_names(halves, browser, server):
    root, base = server
    assert main(["map", str(halves), "--out", str(root / "map.html")]) == 0
    html = (root / "map.html").read_text()
    import re

    assert not re.search(r'<(script|link)[^>]+(src|href)="(?!data:)', html)  # every resource inline
    frames = _load(browser, f"{base}/map.html")
    assert _severe(browser) == []
    _not_blank(browser)
    labels = next(f for f in frames if f["title"] == "labels")
    left = _hover(browser, labels, 0.25, 0.5)
    assert "class: Primary dryland forest" in left
    assert "code: 2001" in left
    assert f"id: {FOREST} " in left
    right = _hover(browser, labels, 0.75, 0.5)
    assert "class: Open water" in right
    assert "code: 5001" in right


@pytest.mark.xdist_group("demo")
def test_report_html__renders_in_the_browser(demo_run, browser, server):
    root, base = server
    report = demo_run[0] / "report.html"
    assert report.exists()
    shutil.copy(report, root / "report.html")
    frames = _load(browser, f"{base}/report.html")
    assert _severe(browser) == []
    _not_blank(browser)
    titles = {f["title"] for f in frames}
    assert {"labels", "prediction", "errors (red) vs labels"} <= titles
    assert "error-adjusted area with 95 % CI, and mapped area (hectares)" in titles
    text = browser.execute_script(_PAGE_TEXT)
    assert "Accuracy: whole scene, by split area" in text
    assert "Class areas" in text
    assert "Training" in text
    assert "Accuracy and area from the sample" in text
    assert "error-adjusted ha" in text
    assert "Land-cover change" in text
    assert "pixels changed" in text
    assert {"from-to map", "map 2015-07-01", "map 2023-07-01"} <= titles
    pred = next(f for f in frames if f["title"] == "prediction")
    assert "class:" in _hover(browser, pred, 0.5, 0.5)
    # every map as wide as the others, and a metre as long across as down (none squashed by its
    # colour bar: the labels and prediction maps had 0.66 where the composite had 1)
    maps = [f for f in frames if f["title"] in {"labels", "prediction", "errors (red) vs labels", "from-to map"}
            or f["title"].startswith(("false colour", "uncertainty", "map 20", "sampled windows"))]  # fmt: skip
    assert len(maps) >= 8, [f["title"] for f in frames]
    for f in maps:
        assert (f["w"] / f["xs"]) / (f["h"] / f["ys"]) == pytest.approx(1, abs=0.02), f
        assert f["w"] == pytest.approx(maps[0]["w"], abs=1), f
    # calibration: the reliability diagram; uncertainty: the entropy map with the suggested points
    assert any(t.startswith("reliability on ") and "test pixels" in t for t in titles), titles
    assert any(t.startswith("uncertainty: entropy") and "100 points to label next" in t for t in titles), (
        titles
    )
    assert "Calibration" in text and "expected calibration error" in text
    # each confusion matrix says what it counts; the error map has a legend
    assert (
        "confusion on the whole scene, by split area, test area (rows: reference; share of each row)"
        in titles
    )
    assert "confusion on the test patches (rows: reference; share of each row)" in titles
    axes = browser.execute_script(_SCIENTIFIC_AXES)
    assert axes["axes"] >= 20 and axes["scientific"] == [], axes  # coordinates, hectares: plain numbers
    legends = browser.execute_script(_LEGENDS)
    assert ["gross gain", "gross loss", "net change"] in legends, legends
    bars = browser.execute_script(_COLOUR_BARS)
    assert {"title": "map vs labels", "labels": ["right", "wrong"], "swatches": 2} in bars, bars
    classes = [b for b in bars if b["title"] == "class"]
    assert len(classes) >= 4  # labels, prediction, the two dates' maps
    for b in classes:  # one named swatch per class present (and the clear nodata slot)
        assert b["swatches"] == len(b["labels"]) + 1, b
        assert any("->" in x for x in b["labels"]) or len(b["labels"]) < 22, b  # of the legend's 22


_COLOUR_BARS = """
const out = []; const seen = new Set();
function walk(v) { if (!v || seen.has(v)) return; seen.add(v);
  const m = v.model; if (m && m.type === 'ColorBar') {
    const o = m.major_label_overrides; const labels = o instanceof Map ? [...o.values()] : Object.values(o ?? {});
    const p = m.color_mapper && m.color_mapper.palette;
    out.push({title: m.title, labels: labels, swatches: p ? p.length : 0}); }
  for (const c of (v.child_views ?? [])) walk(c);
  for (const r of (v.renderer_views ? [...v.renderer_views.values()] : [])) walk(r); }
for (const v of Object.values(Bokeh.index)) walk(v); return out;"""


_SCIENTIFIC_AXES = """
const out = []; const seen = new Set(); let axes = 0;
function walk(v) { if (!v || seen.has(v)) return; seen.add(v);
  const m = v.model; if (m && m.type === 'LinearAxis') { axes += 1;
    if (m.formatter && m.formatter.type === 'BasicTickFormatter' && m.formatter.use_scientific)
      out.push(m.axis_label || '(unlabelled)'); }
  for (const c of (v.child_views ?? [])) walk(c);
  for (const r of (v.renderer_views ? [...v.renderer_views.values()] : [])) walk(r); }
for (const v of Object.values(Bokeh.index)) walk(v); return {axes: axes, scientific: out};"""


_LEGENDS = """
const out = []; const seen = new Set();
function walk(v) { if (!v || seen.has(v)) return; seen.add(v);
  const m = v.model; if (m && m.type === 'Legend') {
    const names = new Set();
    for (const item of m.items) { const l = item.label;
      if (l && l.field) { for (const r of item.renderers) { for (const x of (r.data_source.data.get ? r.data_source.data.get(l.field) : r.data_source.data[l.field])) names.add(String(x)); } }
      else if (l && l.value) names.add(l.value); else if (typeof l === 'string') names.add(l); }
    out.push([...names].sort()); }
  for (const c of (v.child_views ?? [])) walk(c);
  for (const r of (v.renderer_views ? [...v.renderer_views.values()] : [])) walk(r); }
for (const v of Object.values(Bokeh.index)) walk(v); return out;"""


_PAGE_TEXT = (
    "function t(r) { let s = ''; for (const el of r.querySelectorAll('*')) "
    "{ if (el.shadowRoot) s += el.shadowRoot.textContent + t(el.shadowRoot); } return s; }"
    "return document.body.innerText + t(document);"
)


def test_report_html__model_comparison_from_crossval(small_run, browser, server):
    import warnings

    import pandas as pd
    from sklearn.metrics import accuracy_score

    from kerinci_xr.api import crossval

    root, base = server
    kw = dict(folds=3, patch=32, per_class=4, block=64, rounds=10, models=("lightgbm", "rf"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rare classes in small folds
        report = crossval(str(small_run["cube"]), out=root / "cv", **kw)["report"]
    page = root / "cv.html"
    assert (
        main(["report", "--cube", str(small_run["cube"]), "--crossval", str(root / "cv"), "--out", str(page)])
        == 0
    )
    frames = _load(browser, f"{base}/cv.html")
    assert _severe(browser) == []
    assert "overall accuracy: pooled (bars) and per fold (points)" in {f["title"] for f in frames}
    text = browser.execute_script(_PAGE_TEXT)
    assert "Model comparison (cross-validation on identical folds)" in text
    assert f"Use {report['recommendation']['model']}" in text
    assert "lightgbm - rf" in text
    folds = pd.concat(pd.read_parquet(root / "cv" / f"fold{i}" / "test_samples.parquet") for i in (1, 2, 3))
    for model in ("lightgbm", "rf"):  # the pooled figure shown, recomputed from the test pixels
        assert f"{accuracy_score(folds['reference'], folds[model]):.3f}" in text
    assert f"{len(folds):,} of {report['labelled_pixels']:,} labelled pixels scored" in text


def test_report_html__learning_curves(small_run, browser, server):
    """The learning curves bench_active.py saves, on the report page (a results file written here
    in its format: two seeds, two rounds)."""
    import json

    root, base = server
    curve = [
        {"round": r, "labels": 600 + 100 * r, "overall_accuracy": 0.9 + 0.01 * r, "macro_f1": 0.8}
        for r in (0, 1)
    ]
    summary = [
        {
            "round": r,
            "suggest_labels": 600 + 100 * r,
            "suggest_oa_mean": 0.9 + 0.02 * r,
            "suggest_oa_sd": 0.004,
            "random_labels": 600 + 100 * r,
            "random_oa_mean": 0.9 + 0.01 * r,
            "random_oa_sd": 0.006,
        }
        for r in (0, 1)
    ]
    result = {
        "scene": "generated 500 x 500, seed 3",
        "start_per_class": 50,
        "add_per_round": 100,
        "seeds": [0, 1],
        "curves": {"suggest": [curve, curve], "random": [curve, curve]},
        "summary": summary,
    }
    (root / "active.json").write_text(json.dumps(result))
    page = root / "lc.html"
    argv = [
        "report",
        "--cube",
        str(small_run["cube"]),
        "--learning-curves",
        str(root / "active.json"),
        "--out",
        str(page),
    ]
    assert main(argv) == 0
    frames = _load(browser, f"{base}/lc.html")
    assert _severe(browser) == []
    assert "active learning: map accuracy vs labels (2 seeds, mean +- sd)" in {f["title"] for f in frames}
    text = browser.execute_script(_PAGE_TEXT)
    assert "overall accuracy 0.920 +- 0.004 (suggest) vs 0.910 +- 0.006 (random), over 2 seeds" in text


def test_map_cli__bad_input(tmp_path, capsys):
    assert main(["map", str(tmp_path / "none.zarr"), "--out", str(tmp_path / "m.html")]) == 2
    assert "cube not found" in capsys.readouterr().err
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r.html")]) == 2
    assert "expected a run folder with .kerinci-stages.json" in capsys.readouterr().err
    assert not Path(tmp_path / "r.html").exists()


def _find(page: np.ndarray, part: np.ndarray) -> tuple[int, int]:
    """Where ``part`` lies in ``page`` pixel for pixel (the map is pasted, never resampled)."""
    h, w = part.shape[:2]
    for y in range(page.shape[0] - h + 1):
        for x in range(min(40, page.shape[1] - w + 1)):
            if np.array_equal(page[y : y + h, x : x + w], part):
                return y, x
    raise AssertionError("the map is not in the picture at its pixels")


def test_quicklook_pngs__titled_with_a_legend_of_the_classes_shown(halves, tmp_path):
    """Each PNG holds the map at its pixels (the legend's colours, computed here from lc.json's
    palette), a title above it and, right of it, one swatch per class shown: forest and water,
    not the legend's other 20; the error PNG's key is right, wrong, not compared."""
    from PIL import Image

    from kerinci_xr.cube import open_cube, write_cube

    cube = open_cube(halves)
    pred = write_cube(cube[["labels"]].rename(labels="classes").assign_attrs(cube.attrs), tmp_path / "p.zarr")
    out = tmp_path / "pngs"
    assert main(["-q", "map", str(halves), "--prediction", str(pred), "--out", str(tmp_path / "m.html"),
                 "--png", str(out)]) == 0  # fmt: skip
    labels = cube["labels"].values
    palette = {
        i + 1: tuple(int(c[k : k + 2], 16) for k in (0, 2, 4)) for i, c in enumerate(KLHK_LEGEND.palette)
    }
    expect = np.array([palette[v] for v in labels.ravel()], np.uint8).reshape(*labels.shape, 3)
    page = np.asarray(Image.open(out / "labels.png").convert("RGB"))
    y, x = _find(page, expect)
    assert y >= 12  # a title above the map
    title = page[:y, x : x + labels.shape[1]]
    assert (title != 255).any()  # the title is drawn
    key = page[y:, x + labels.shape[1] + 4 :]  # right of the map: the legend
    swatches = {tuple(c) for c in key.reshape(-1, 3)} & set(palette.values())
    assert swatches == {palette[FOREST], palette[WATER]}
    assert page.shape[1] > x + labels.shape[1] + 100  # room for the names
    errors = np.asarray(Image.open(out / "errors.png").convert("RGB"))
    green = np.zeros((*labels.shape, 3), np.uint8)
    green[:] = (26, 150, 65)  # the prediction is the labels: right everywhere
    ey, ex = _find(errors, green)
    key = {tuple(c) for c in errors[ey:, ex + labels.shape[1] + 4 :].reshape(-1, 3)}
    assert {(26, 150, 65), (215, 25, 28), (0, 0, 0)} <= key
    fc = np.asarray(Image.open(out / "false_colour.png").convert("RGB"))
    assert fc.shape[0] > labels.shape[0] + 12 and (fc[:12] != 255).any()
