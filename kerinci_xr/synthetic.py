"""A Kerinci-like scene generator: Landsat 8/9, ALOS PALSAR and KLHK labels shaped like the original.

The original study's rasters (a Google Earth Engine export over Kerinci Regency, Jambi,
Sumatra) cannot be downloaded here, so this module writes files with the same names, bands,
data types, grids and class structure. Every field is a pure function of the pixel's position
and the seed (hashed value noise on a fixed lattice, and per-pixel noise hashed from the pixel's
row, column and band), so the scene is produced window by window with flat memory, seamlessly, and
byte-identically for one seed, whatever the window size.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import ndtri

from ._hashing import hash_u64, hash_uniform
from ._locations import Location, URLPath, as_location
from ._outputs import atomic_output, output_folder
from ._products import product_exists
from .errors import InvalidInputError, OutputExistsError
from .legend import Legend

__all__ = [
    "KLHK_LEGEND",
    "LANDSAT_BANDS",
    "SceneFiles",
    "make_kerinci_scene",
    "make_kerinci_series",
    "scene_files",
]

log = logging.getLogger(__name__)

#: The 22 KLHK (Indonesian Ministry of Environment and Forestry) land-cover classes.
KLHK_LEGEND = Legend(
    values=(
        2001,
        2002,
        2004,
        2005,
        2006,
        2007,
        2010,
        2012,
        2014,
        3000,
        5001,
        20041,
        20051,
        20071,
        20091,
        20092,
        20093,
        20094,
        20121,
        20122,
        20141,
        50011,
    ),
    labels=(
        "Primary dryland forest",
        "Secondary dryland forest",
        "Primary mangrove forest",
        "Primary swamp forest",
        "Plantation forest",
        "Dry shrub",
        "Estate crop",
        "Settlement",
        "Bare ground",
        "Savanna and grasses",
        "Open water",
        "Secondary mangrove forest",
        "Secondary swamp forest",
        "Wet shrub",
        "Pure dry agriculture",
        "Mixed dry agriculture",
        "Paddy field",
        "Fish pond/aquaculture",
        "Port or harbour",
        "Transmigration areas",
        "Mining",
        "Swamp",
    ),
    palette=(
        "006400",
        "228B22",
        "4B0082",
        "808000",
        "32CD32",
        "90EE90",
        "FF4500",
        "F08080",
        "D2B48C",
        "ADFF2F",
        "87CEFA",
        "6A5ACD",
        "6B8E23",
        "66CDAA",
        "FFD700",
        "FFA500",
        "008080",
        "E6E6FA",
        "B22222",
        "C71585",
        "A0522D",
        "7FFFD4",
    ),
    source="KLHK legend (kerinci_xr.synthetic)",
)

LANDSAT_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B9")
PALSAR_BANDS = ("HH", "HV")
LANDSAT_NODATA = 0
PALSAR_NODATA = -32768
LABEL_NODATA = 0
#: Landsat Collection 2 QA_PIXEL bits the scene's quality band sets: dilated cloud, cloud, clear.
QA_DILATED, QA_CLOUD, QA_CLEAR = 1 << 1, 1 << 3, 1 << 6

#: Landsat grid of the original export: EPSG:4326, about 30 m, top-left near Kerinci.
RES = 0.000269494585236
ORIGIN = (101.1, -1.8)  # lon, lat of the top-left corner
#: PALSAR mosaic grid: 25 m, another origin.
RADAR_RES = 0.000224578821
RADAR_PAD = 0.004  # degrees of radar beyond the optical footprint on every side

# Class codes used by the generator.
PRIMARY, SECONDARY, PLANT_FOREST, SHRUB, ESTATE = 2001, 2002, 2006, 2007, 2010
SETTLEMENT, BARE, SAVANNA, WATER, WET_SHRUB = 2012, 2014, 3000, 5001, 20071
DRY_AGRI, MIXED_AGRI, PADDY, MINING = 20091, 20092, 20093, 20141

# Surface reflectance per band (B1, B2, B3, B4, B5, B6, B7, B9) and PALSAR HH, HV in dB.
SIGNATURES: dict[int, tuple[tuple[float, ...], tuple[float, float]]] = {
    PRIMARY: ((0.018, 0.024, 0.046, 0.026, 0.34, 0.145, 0.060, 0.002), (-6.5, -11.5)),
    SECONDARY: ((0.022, 0.029, 0.056, 0.036, 0.30, 0.170, 0.078, 0.002), (-7.2, -12.6)),
    PLANT_FOREST: ((0.024, 0.030, 0.062, 0.034, 0.36, 0.180, 0.082, 0.002), (-7.6, -13.0)),
    SHRUB: ((0.030, 0.040, 0.072, 0.052, 0.27, 0.205, 0.105, 0.002), (-8.8, -14.8)),
    ESTATE: ((0.028, 0.034, 0.064, 0.042, 0.25, 0.185, 0.090, 0.002), (-8.0, -13.8)),
    SETTLEMENT: ((0.080, 0.092, 0.112, 0.130, 0.20, 0.255, 0.225, 0.003), (-3.0, -10.5)),
    BARE: ((0.100, 0.122, 0.160, 0.205, 0.27, 0.335, 0.285, 0.003), (-12.5, -20.0)),
    SAVANNA: ((0.040, 0.052, 0.085, 0.082, 0.30, 0.265, 0.150, 0.002), (-10.5, -17.0)),
    WATER: ((0.052, 0.050, 0.052, 0.034, 0.020, 0.010, 0.006, 0.001), (-20.0, -27.0)),
    WET_SHRUB: ((0.030, 0.036, 0.062, 0.042, 0.21, 0.125, 0.058, 0.002), (-11.0, -16.5)),
    DRY_AGRI: ((0.052, 0.062, 0.092, 0.105, 0.26, 0.275, 0.175, 0.002), (-10.2, -17.5)),
    MIXED_AGRI: ((0.040, 0.046, 0.076, 0.070, 0.29, 0.225, 0.122, 0.002), (-9.2, -15.8)),
    PADDY: ((0.050, 0.056, 0.072, 0.062, 0.16, 0.110, 0.065, 0.002), (-14.5, -21.0)),
    MINING: ((0.125, 0.140, 0.180, 0.220, 0.25, 0.300, 0.270, 0.003), (-13.5, -21.5)),
}
_CODES = np.array(sorted(SIGNATURES), dtype=np.int64)
_SPEC = np.array([SIGNATURES[c][0] for c in _CODES], dtype=np.float32)
_SAR = np.array([SIGNATURES[c][1] for c in _CODES], dtype=np.float32)


@dataclass(frozen=True)
class SceneFiles:
    """Paths of a generated scene, named as the original export."""

    landsat: Location
    palsar: Location
    labels: Location
    legend: Location
    qa_pixel: Location
    points: Location


def scene_files(out_dir: str | os.PathLike, year: int | None = None) -> SceneFiles:
    """The paths :func:`make_kerinci_scene` writes in ``out_dir``: the original export's names,
    or, for one year of a series, the same names with that year (``LC_Image_2015_v1.tif``)."""
    out = as_location(out_dir)
    y = year or 2023
    return SceneFiles(
        landsat=out / f"Landsat_Kerinci_{y}_v1.tif",
        palsar=out / f"Palsar_Kerinci_{y}_v1.tif",
        labels=out / ("LC_Image_v1.tif" if year is None else f"LC_Image_{y}_v1.tif"),
        legend=out / "lc.json",
        qa_pixel=out / f"Landsat_Kerinci_{y}_v1_QA_PIXEL.tif",
        points=out / ("Sample_LC_v1.geojson" if year is None else f"Sample_LC_{y}_v1.geojson"),
    )


# ---- hashed value noise --------------------------------------------------------------------
def _interp_matrix(coords: np.ndarray, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """Smoothstep interpolation weights from lattice points (spacing ``cell``) to ``coords``."""
    t = coords / cell
    i0 = np.floor(t).astype(np.int64)
    f = t - i0
    f = f * f * (3 - 2 * f)
    base = i0.min()
    lattice = np.arange(base, i0.max() + 2)
    w = np.zeros((coords.size, lattice.size))
    rows = np.arange(coords.size)
    w[rows, i0 - base] = 1 - f
    w[rows, i0 - base + 1] = f
    return w, lattice


def _noise(rows: np.ndarray, cols: np.ndarray, cell: float, key: int) -> np.ndarray:
    """Value noise in [0, 1] on the separable grid ``rows x cols`` (fractional pixel coords)."""
    wy, ly = _interp_matrix(rows, cell)
    wx, lx = _interp_matrix(cols, cell)
    lat = hash_uniform(ly[:, None], lx[None, :], key)
    return (wy @ lat) @ wx.T


def _fbm(rows, cols, cell, key, octaves=4) -> np.ndarray:
    total = np.zeros((rows.size, cols.size))
    amp, norm = 1.0, 0.0
    for k in range(octaves):
        total += amp * _noise(rows, cols, cell / 2**k, key * 131 + k)
        norm += amp
        amp *= 0.5
    return total / norm


def _uniformize(x: np.ndarray, sd: float) -> np.ndarray:
    """Map a roughly normal field with mean 0.5 and std ``sd`` to roughly uniform [0, 1]."""
    from math import erf, sqrt

    v = np.vectorize(lambda z: 0.5 * (1 + erf(z / sqrt(2))), otypes=[float])
    # a table lookup keeps this fast on large windows
    grid = np.linspace(-6, 6, 4097)
    table = v(grid)
    return np.interp((x - 0.5) / sd, grid, table)


# Standard deviations of the fBm fields, measured once over large areas (see tests).
_SD4, _SD2, _SD1 = 0.132, 0.160, 0.215


def _terrain(rows: np.ndarray, cols: np.ndarray, seed: int, shape: tuple[int, int]) -> np.ndarray:
    """Terrain height in [0, 1]: a basin in the scene's middle, ridges towards its edges.

    As in Kerinci, a valley of lakes, paddy and settlements lies between forested ranges. The
    relief's scale follows the scene up to 900 pixels (27 km), so small scenes hold several
    landscapes and large ones keep a realistic scale.
    """
    h, w = shape
    cell = float(np.clip(min(h, w) / 2.5, 120.0, 900.0))
    noise = _uniformize(_fbm(rows, cols, cell, seed * 1000 + 1, 4), _SD4)
    d = np.hypot((rows[:, None] - h / 2) / (h / 2), (cols[None, :] - w / 2) / (w / 2))
    ridge = np.clip(d * (1.5 / np.sqrt(2)), 0.0, 1.0)
    return np.clip(0.7 * noise + 0.3 * ridge - 0.05, 0.0, 1.0)


def _classes(
    rows: np.ndarray, cols: np.ndarray, seed: int, shape: tuple[int, int], years: int = 0
) -> np.ndarray:
    """KLHK code of every pixel of the grid ``rows x cols`` (fractional optical pixel coords),
    ``years`` after the first year of a series (0: the base landscape; see :func:`_change`)."""
    k = seed * 1000
    elev = _terrain(rows, cols, seed, shape)  # 0 valley .. 1 ridge
    river = np.abs(_fbm(rows, cols, 260.0, k + 2, 2) - 0.5)
    road = np.abs(_fbm(rows, cols, 420.0, k + 3, 2) - 0.5)
    patch = _uniformize(_fbm(rows, cols, 70.0, k + 4, 2), _SD2)
    blocks = _uniformize(_fbm(np.floor(rows / 48) * 48, np.floor(cols / 48) * 48, 180.0, k + 5, 1), _SD1)
    rare = _uniformize(_fbm(rows, cols, 36.0, k + 6, 2), _SD2)
    out = np.full(elev.shape, PRIMARY, dtype=np.int64)
    out[elev < 0.43] = SECONDARY
    out[(elev < 0.52) & (elev >= 0.36) & (blocks > 0.74)] = PLANT_FOREST
    out[(elev < 0.40) & (patch > 0.64)] = SHRUB
    out[(elev < 0.34)] = MIXED_AGRI
    out[(elev < 0.34) & (patch < 0.33)] = DRY_AGRI
    out[(elev < 0.40) & (elev >= 0.22) & (blocks > 0.62)] = ESTATE
    out[(elev > 0.90) & (patch > 0.8)] = SAVANNA
    out[(elev < 0.17)] = PADDY
    near_road = (road < 0.012) & (elev < 0.36)
    out[near_road & (patch > 0.45)] = SETTLEMENT
    out[(road < 0.0022) & (elev < 0.42)] = SETTLEMENT
    out[(elev < 0.065)] = WET_SHRUB
    out[(elev < 0.045)] = WATER
    out[(elev < 0.55) & (river < 0.0045)] = WATER
    out[(elev < 0.38) & (elev > 0.12) & (rare > 0.965) & (out != WATER)] = BARE
    out[(elev > 0.40) & (elev < 0.65) & (rare < 0.018)] = MINING
    return _change(out, rows, cols, elev, road, seed, years) if years > 0 else out


def _change(codes, rows, cols, elev, road, seed: int, years: int) -> np.ndarray:
    """The landscape ``years`` later: what Kerinci Seblat's margins see.

    Forest on the lower slopes is cleared in blocks for estate crops (a growing share each year),
    settlements grow along the roads into the farmland around them, and shrub near farms is
    taken into mixed agriculture. A pure function of position, seed and years, so the change
    between two years is known exactly (the difference of their label rasters).
    """
    k = seed * 1000
    grow = min(years / 8.0, 2.0)  # about the share of 2015 -> 2023 per 8 years
    out = codes.copy()
    clearing = _uniformize(_fbm(np.floor(rows / 24) * 24, np.floor(cols / 24) * 24, 110.0, k + 21, 2), _SD2)
    forest = (codes == PRIMARY) | (codes == SECONDARY) | (codes == PLANT_FOREST)
    out[forest & (elev < 0.55) & (clearing > 1 - 0.16 * grow)] = ESTATE
    farms = (codes == MIXED_AGRI) | (codes == DRY_AGRI) | (codes == PADDY)
    out[farms & (road < 0.012 + 0.005 * grow) & (elev < 0.36)] = SETTLEMENT
    spread = _uniformize(_fbm(rows, cols, 50.0, k + 22, 2), _SD2)
    out[(codes == SHRUB) & (elev < 0.40) & (spread > 1 - 0.35 * grow)] = MIXED_AGRI
    return out


def _pixel_noise(seed: int, what: int, r0: int, c0: int, h: int, w: int, bands: int) -> np.ndarray:
    """Standard normal noise ``(h, w, bands)`` float32, a pure function of (seed, what, row, col,
    band): the same pixel gets the same noise whatever window it is generated in."""
    rows = np.arange(r0, r0 + h, dtype=np.uint64)[:, None, None]
    cols = np.arange(c0, c0 + w, dtype=np.uint64)[None, :, None] * np.uint64(bands)
    key = int(hash_u64(np.array([seed]), np.array([what]), 0x5EED)[0])
    bits = hash_u64(rows, cols + np.arange(bands, dtype=np.uint64), key) >> np.uint64(11)
    return ndtri((bits.astype(np.float64) + 0.5) * (1.0 / (1 << 53))).astype(np.float32)


def _clouds(
    rows: np.ndarray, cols: np.ndarray, seed: int, shape: tuple[int, int], years: int
) -> tuple[np.ndarray, np.ndarray]:
    """Cloud pixels (the image's nodata) and the ring around them a QA band calls dilated cloud:
    scattered cumulus plus one bank that every scene has (at 30 % down, 70 % across)."""
    cloud = _fbm(rows, cols, 160.0, seed * 1000 + 10 + 97 * years, 3)  # clouds move between acquisitions
    cy, cx = 0.3 * shape[0], (0.7 if years % 2 == 0 else 0.3) * shape[1]
    radius = max(6.0, 0.04 * min(shape))
    dist = np.hypot((rows[:, None] - cy) / radius, (cols[None, :] - cx) / (1.6 * radius))
    bank = dist + 0.6 * (cloud - 0.5)
    core = (cloud > 0.80) | (bank < 1.0)
    return core, ((cloud > 0.77) | (bank < 1.12)) & ~core


def _landsat_window(
    r0: int, c0: int, h: int, w: int, seed: int, shape: tuple[int, int], years: int = 0, qa: bool = False
) -> tuple[np.ndarray, ...]:
    rows = np.arange(r0, r0 + h, dtype=np.float64) + 0.5
    cols = np.arange(c0, c0 + w, dtype=np.float64) + 0.5
    codes = _classes(rows, cols, seed, shape, years)
    idx = np.searchsorted(_CODES, codes)
    spec = _SPEC[idx]  # (h, w, 8)
    k = seed * 1000
    texture = (_fbm(rows, cols, 12.0, k + 7, 2).astype(np.float32) - 0.5) * 0.5
    illum = 0.85 + 0.3 * _fbm(rows, cols, 90.0, k + 8, 3).astype(np.float32)
    # paddy fields mix flooded and green stages; water and paddy share the wet signal
    wet = _fbm(rows, cols, 10.0, k + 9, 1).astype(np.float32)
    paddy = codes == PADDY
    if paddy.any():
        mix = wet[paddy][:, None]
        spec[paddy] = (1 - mix) * _SPEC[np.searchsorted(_CODES, WATER)] + mix * _SPEC[
            np.searchsorted(_CODES, MIXED_AGRI)
        ]
    noise = _pixel_noise(seed, 1 + 10 * years, r0, c0, h, w, spec.shape[-1])  # another year, other noise
    refl = spec * (illum[..., None] * (1 + texture[..., None])) + noise * (0.004 + 0.04 * spec)
    dn = np.clip(np.rint(refl * 1e4), 1, 65535).astype(np.uint16)
    cloud, near = _clouds(rows, cols, seed, shape, years)
    dn[cloud] = LANDSAT_NODATA
    if not qa:
        return np.moveaxis(dn, -1, 0), codes.astype(np.uint16)
    bits = np.where(cloud, QA_CLOUD | QA_DILATED, np.where(near, QA_DILATED, QA_CLEAR)).astype(np.uint16)
    return np.moveaxis(dn, -1, 0), codes.astype(np.uint16), bits


def _radar_window(
    r0: int, c0: int, h: int, w: int, seed: int, geo, shape: tuple[int, int], years: int = 0
) -> np.ndarray:
    lon0, lat0 = geo
    lats = lat0 - (np.arange(r0, r0 + h) + 0.5) * RADAR_RES
    lons = lon0 + (np.arange(c0, c0 + w) + 0.5) * RADAR_RES
    rows = (ORIGIN[1] - lats) / RES  # fractional optical pixel coordinates
    cols = (lons - ORIGIN[0]) / RES
    codes = _classes(rows, cols, seed, shape, years)
    sar = _SAR[np.searchsorted(_CODES, codes)]  # (h, w, 2)
    speckle = _pixel_noise(seed, 2 + 10 * years, r0, c0, h, w, sar.shape[-1]) * 1.2
    db = sar + speckle
    return np.moveaxis(np.clip(np.rint(db * 1e3), -32767, 32767).astype(np.int16), -1, 0)


def _windows(height: int, width: int, size: int):
    for r0 in range(0, height, size):
        for c0 in range(0, width, size):
            yield r0, c0, min(size, height - r0), min(size, width - c0)


def _write_windows(dst_specs, height, width, block, make, threads):
    """Compute windows on ``threads`` threads (bounded queue) and write them in order."""
    import rasterio
    from rasterio.windows import Window

    opened = [rasterio.open(path, "w", **profile) for path, profile in dst_specs]
    try:
        with cf.ThreadPoolExecutor(max_workers=threads) as pool:
            pending: list = []
            for win in _windows(height, width, block):
                pending.append((win, pool.submit(make, *win)))
                if len(pending) >= 2 * threads:
                    _flush(pending.pop(0), opened, Window)
            while pending:
                _flush(pending.pop(0), opened, Window)
    finally:
        for ds in opened:
            ds.close()


def _flush(item, opened, Window) -> None:
    (r0, c0, h, w), fut = item
    arrays = fut.result()
    arrays = arrays if isinstance(arrays, tuple) else (arrays,)
    for ds, arr in zip(opened, arrays, strict=True):
        ds.write(arr if arr.ndim == 3 else arr[None], window=Window(c0, r0, w, h))


def _profile(count, dtype, height, width, transform, nodata, block=256) -> dict:
    from rasterio.crs import CRS

    return {
        "driver": "GTiff",
        "count": count,
        "dtype": dtype,
        "height": height,
        "width": width,
        "crs": CRS.from_epsg(4326),
        "transform": transform,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": block,
        "blockysize": block,
        "compress": "deflate",
        "zlevel": 1,
        "predictor": 2,
        "BIGTIFF": "IF_SAFER",
        "num_threads": "all_cpus",
    }


def make_kerinci_scene(
    out_dir: str | Path,
    *,
    height: int = 2751,
    width: int = 2692,
    seed: int = 0,
    block: int = 1024,
    threads: int = 2,
    radar: bool = True,
    overwrite: bool = False,
    year: int | None = None,
    years_since: int = 0,
    points: int = 0,
    qa_pixel: bool = False,
) -> SceneFiles:
    """Write a Kerinci-like scene with the original export's file names.

    Writes ``Landsat_Kerinci_2023_v1.tif`` (8 bands B1..B7, B9, uint16 reflectance x1e4,
    EPSG:4326 at about 0.000269 degrees, nodata 0 under clouds), ``Palsar_Kerinci_2023_v1.tif``
    (HH, HV, int16 dB x1e3 on a 25 m grid with another origin), ``LC_Image_v1.tif`` (uint16 KLHK
    codes, spatially coherent and imbalanced) and ``lc.json`` (the 22 KLHK classes).

    Parameters
    ----------
    out_dir
        Folder to write into (created if missing).
    height, width
        Landsat grid size in pixels (the original is about 2751 x 2692).
    seed
        Same seed, same bytes; another seed, another landscape.
    block
        Window edge (pixels) generated at a time: memory is flat in the scene size.
    threads
        Threads that generate windows while the previous ones are compressed and written.
    radar
        Also write the PALSAR file.
    overwrite
        Replace existing files (refused otherwise, before anything is written).
    year, years_since
        One year of a series (:func:`make_kerinci_series`): the year in the file names and as
        the acquisition date (``ACQUISITION_DATE`` tag, 1 July), and the years of change since
        the series' first year.
    points
        Also write ``Sample_LC_v1.geojson``: this many reference points (like the study's 14,029),
        uniformly random over the scene at seeded positions, each with the KLHK code of the label
        map where it lies (field ``lc``), longitude/latitude on EPSG:4326; points on unlabelled
        pixels are dropped, so a few less may be written.
    qa_pixel
        Also write ``Landsat_Kerinci_2023_v1_QA_PIXEL.tif``, a Landsat Collection 2 style quality
        band (uint16 bits: 1 dilated cloud, 3 cloud, 6 clear): cloud where the image is nodata,
        dilated cloud also in a ring of valid pixels around the clouds.
    """
    from affine import Affine

    if height < 16 or width < 16:
        raise InvalidInputError(f"scene size: expected at least 16 x 16 pixels, found {height} x {width}.")
    if seed < 0:
        raise InvalidInputError(f"seed: expected a non-negative integer, found {seed}.")
    if points < 0:
        raise InvalidInputError(f"points: expected 0 or more reference points, found {points}.")
    out = as_location(out_dir)
    files = scene_files(out, year)
    targets = [files.landsat, files.labels, files.legend] + ([files.palsar] if radar else [])
    targets += ([files.qa_pixel] if qa_pixel else []) + ([files.points] if points else [])
    existing = [str(p) for p in targets if product_exists(p)]
    if existing and not overwrite:
        raise OutputExistsError(
            f"{out}: the scene files {existing} exist. Fix: pass overwrite=True (--overwrite) "
            "or choose another folder."
        )
    output_folder(out)
    with contextlib.ExitStack() as stack:  # through the output set: locked, all files or none
        tmp = {p: stack.enter_context(atomic_output(p, overwrite=overwrite)) for p in targets}
        transform = Affine(RES, 0, ORIGIN[0], 0, -RES, ORIGIN[1])
        qa_profile = _profile(1, "uint16", height, width, transform, None)
        qa_spec = [(tmp[files.qa_pixel], qa_profile)] if qa_pixel else []
        _write_windows(
            [
                (
                    tmp[files.landsat],
                    _profile(8, "uint16", height, width, transform, LANDSAT_NODATA),
                ),
                (tmp[files.labels], _profile(1, "uint16", height, width, transform, LABEL_NODATA)),
                *qa_spec,
            ],
            height,
            width,
            block,
            lambda r0, c0, h, w: _landsat_window(r0, c0, h, w, seed, (height, width), years_since, qa_pixel),
            threads,
        )
        date = {"ACQUISITION_DATE": f"{year}-07-01"} if year is not None else {}
        _describe(tmp[files.landsat], LANDSAT_BANDS, date)
        _describe(tmp[files.labels], ("LC",), date)
        if qa_pixel:
            _describe(tmp[files.qa_pixel], ("QA_PIXEL",), date)
        if points:
            _write_points(tmp[files.points], tmp[files.labels], points, seed, years_since)
        if radar:
            lon0, lat0 = ORIGIN[0] - RADAR_PAD, ORIGIN[1] + RADAR_PAD
            rh = int(np.ceil((height * RES + 2 * RADAR_PAD) / RADAR_RES))
            rw = int(np.ceil((width * RES + 2 * RADAR_PAD) / RADAR_RES))
            rtr = Affine(RADAR_RES, 0, lon0, 0, -RADAR_RES, lat0)
            _write_windows(
                [(tmp[files.palsar], _profile(2, "int16", rh, rw, rtr, PALSAR_NODATA))],
                rh,
                rw,
                block,
                lambda r0, c0, h, w: _radar_window(
                    r0, c0, h, w, seed, (lon0, lat0), (height, width), years_since
                ),
                threads,
            )
            _describe(tmp[files.palsar], PALSAR_BANDS, date)
        tmp[files.legend].write_text(KLHK_LEGEND.to_text(), encoding="utf-8")
    log.info("wrote Kerinci-like scene %d x %d (seed %d) to %s", height, width, seed, out)
    return files


def _write_points(path: Path, labels: Path, n: int, seed: int, years: int) -> None:
    """``n`` seeded random positions over the label raster, each with its code (field ``lc``)."""
    import geopandas as gpd
    import rasterio

    rng = np.random.default_rng([seed, 0x9017, years])
    with rasterio.open(labels) as src:
        rows, cols = rng.uniform(0, src.height, n), rng.uniform(0, src.width, n)
        lon, lat = src.transform * (cols, rows)
        codes = np.fromiter((v[0] for v in src.sample(zip(lon, lat, strict=True))), dtype=np.int64, count=n)
    keep = codes != LABEL_NODATA
    gdf = gpd.GeoDataFrame({"lc": codes[keep]}, geometry=gpd.points_from_xy(lon[keep], lat[keep]), crs=4326)
    gdf.to_file(path, driver="GeoJSON")


#: eo:bands common names of the generated Landsat bands (the STAC items :func:`write_stac` writes).
COMMON_NAMES = dict(
    zip(
        LANDSAT_BANDS, ("coastal", "blue", "green", "red", "nir08", "swir16", "swir22", "cirrus"), strict=True
    )
)


def stac_items_path(out_dir: str | os.PathLike) -> Location:
    """Where :func:`write_stac` writes the ItemCollection of a scene folder."""
    return as_location(out_dir) / "stac_items.json"


def write_stac(
    out_dir: str | Path, years: Sequence[int | None] | None = None, *, overwrite: bool = False
) -> Location:
    """A STAC ItemCollection of the scene(s) in ``out_dir``, as a STAC API search returns one:
    one item per year (``stac_items.json``) whose assets are the Landsat bands, one GeoTIFF each
    (``Landsat_Kerinci_2023_v1_B2.tif`` ...; uint16 reflectance x1e4, nodata 0, copied
    window by window), with ``eo:bands`` common names, ``raster:bands`` scale 1e-4 and the
    projection extension's grid (``proj:epsg``, ``proj:shape``, ``proj:transform``). For
    ``prepare --stac``: the same pixels as the GeoTIFF, through odc-stac."""
    import rasterio
    from rasterio.windows import Window

    out = as_location(out_dir)
    if isinstance(out, URLPath):
        raise InvalidInputError(
            f"{out}: the STAC items are written to a local folder. Fix: --out a local folder."
        )
    items_path = stac_items_path(out)
    folder = items_path.parent
    band_files = {
        year: {b: folder / f"{Path(scene_files(out, year).landsat).stem}_{b}.tif" for b in LANDSAT_BANDS}
        for year in ([*years] if years else [None])
    }
    targets = [items_path, *(p for bands in band_files.values() for p in bands.values())]
    existing = [str(p) for p in targets if product_exists(p)]
    if existing and not overwrite:
        raise OutputExistsError(f"{folder}: the STAC files {existing[:2]} exist. Fix: --overwrite.")
    features = []
    with contextlib.ExitStack() as stack:  # one output set: every file or none
        tmp = {p: stack.enter_context(atomic_output(p, overwrite=overwrite)) for p in targets}
        for year, bands in band_files.items():
            source = scene_files(out, year).landsat
            with rasterio.open(source) as src:
                profile = _profile(1, "uint16", src.height, src.width, src.transform, LANDSAT_NODATA)
                dsts = [stack.enter_context(rasterio.open(tmp[p], "w", **profile)) for p in bands.values()]
                for r0, c0, h, w in _windows(src.height, src.width, 1024):
                    window = Window(c0, r0, w, h)
                    for dst, band in zip(dsts, src.read(window=window), strict=True):  # one read per window
                        dst.write(band, 1, window=window)
                for dst in dsts:
                    dst.close()
                features.append(
                    _stac_item(Path(source).stem, src, year, {b: p.name for b, p in bands.items()})
                )
        tmp[items_path].write_text(json.dumps({"type": "FeatureCollection", "features": features}, indent=1))
    return items_path


def _stac_item(item_id: str, src, year: int | None, hrefs: dict[str, str]) -> dict:
    """One year's STAC item: the grid of ``src`` (an open raster), one asset per band file."""
    w, s, e, n = src.bounds
    raster = {"data_type": "uint16", "nodata": LANDSAT_NODATA, "scale": 1e-4, "offset": 0.0}
    assets = {
        b: {
            "href": f"./{name}",
            "type": "image/tiff; application=geotiff",
            "roles": ["data"],
            "eo:bands": [{"name": b, "common_name": COMMON_NAMES[b]}],
            "raster:bands": [raster],
        }
        for b, name in hrefs.items()
    }
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": [
            f"https://stac-extensions.github.io/{ext}/schema.json"
            for ext in ("eo/v1.1.0", "raster/v1.1.0", "projection/v1.1.0")
        ],
        "id": item_id,
        "collection": "kerinci-synthetic",
        "bbox": [w, s, e, n],
        "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
        "properties": {
            "datetime": f"{year or 2023}-07-01T00:00:00Z",
            "proj:epsg": 4326,
            "proj:shape": [src.height, src.width],
            "proj:transform": list(src.transform)[:6],
        },
        "links": [],
        "assets": assets,
    }


def _describe(path: Path, names, tags: dict[str, str] | None = None) -> None:
    import rasterio

    with rasterio.open(path, "r+") as ds:
        for i, name in enumerate(names, start=1):
            ds.set_band_description(i, name)
        if tags:
            ds.update_tags(**tags)


def make_kerinci_series(
    out_dir: str | Path, years: list[int] | tuple[int, ...], *, overwrite: bool = False, **kw
) -> list[SceneFiles]:
    """One Kerinci-like scene per year on one grid, the later years with known land-cover change.

    ``years`` in increasing order; the first is the base landscape and every later one that
    landscape after :func:`_change` for the years between (forest cleared for estate crops,
    settlements growing along roads, shrub taken into farmland). Files carry the year in their
    names (``Landsat_Kerinci_2015_v1.tif``, ``LC_Image_2015_v1.tif`` ...) and their date in an
    ``ACQUISITION_DATE`` tag; the label rasters are the truth of each year, so the change between
    two years is exactly their difference.
    """
    years = [int(y) for y in years]
    if len(years) < 2 or years != sorted(set(years)):
        raise InvalidInputError(f"years: expected two or more increasing years, found {years}.")
    existing = [
        str(p)
        for y in years
        for p in (scene_files(out_dir, y).landsat, scene_files(out_dir, y).labels)
        if product_exists(p)
    ]
    if existing and not overwrite:
        raise OutputExistsError(
            f"{out_dir}: the scene files {existing} exist. Fix: pass overwrite=True (--overwrite)."
        )
    return [
        make_kerinci_scene(out_dir, year=y, years_since=y - years[0], overwrite=True, **kw) for y in years
    ]
