import dask.array as da
import numpy as np
import pytest
import xarray as xr

from kerinci_xr.errors import InvalidInputError
from kerinci_xr.legend import Legend
from kerinci_xr.preprocess import (
    band_roles,
    check_label_codes,
    false_colour,
    label_code_counts,
    nbr,
    ndvi,
    ndwi,
    remap_labels,
    scale_values,
    stretch_limits,
    valid_mask,
)

from .conftest import raise_if_dask_computes

LEGEND = Legend(
    values=(2001, 5001, 20093),
    labels=("forest", "water", "paddy"),
    palette=("006400", "87CEFA", "008080"),
)
BANDS = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B9"]


def _image(backend, *, nodata=0, seed=0):
    rng = np.random.default_rng(seed)
    raw = rng.integers(1, 5000, size=(8, 40, 30)).astype(np.uint16)
    raw[:, 5, 7] = nodata  # a fully missing pixel
    raw[2, 9, 9] = nodata  # one band missing: the pixel is invalid
    data = da.from_array(raw, chunks=(8, 16, 16)) if backend == "dask" else raw
    return xr.DataArray(data, dims=("band", "y", "x"), coords={"band": BANDS}, attrs={"nodata": nodata})


@pytest.mark.parametrize("backend", ["numpy", "dask"])
def test_scale_values__reflectance_and_nodata(backend):
    img = _image(backend)
    with raise_if_dask_computes():
        out = scale_values(img, scale=1e-4)
        mask = valid_mask(img)
    assert out.dtype == np.float32
    vals = out.values
    raw = np.asarray(img.values, dtype=np.float64)
    assert np.isnan(vals[:, 5, 7]).all()
    assert np.isnan(vals[:, 9, 9]).all()
    assert not mask.values[5, 7]
    assert not mask.values[9, 9]
    assert mask.values.sum() == 40 * 30 - 2
    ok = mask.values
    np.testing.assert_allclose(vals[:, ok], raw[:, ok] * 1e-4, rtol=1e-6)


def test_scale_values__dn_and_offset():
    img = _image("numpy").isel(band=slice(0, 3))
    out = scale_values(img, scale=1 / 255, offset=-0.1).values
    np.testing.assert_allclose(out[0, 0, 0], img.values[0, 0, 0] / 255 - 0.1, rtol=1e-6)


def test_scale_values__radar_db_x1000():
    raw = xr.DataArray(
        np.array([[[-7500, -32768]], [[-12250, -15000]]], dtype=np.int16),
        dims=("band", "y", "x"),
        coords={"band": ["HH", "HV"]},
        attrs={"nodata": -32768},
    )
    out = scale_values(raw, scale=1e-3).values
    np.testing.assert_allclose(out[:, 0, 0], [-7.5, -12.25])
    assert np.isnan(out[:, 0, 1]).all()


def test_scale_values__zero_scale_refused():
    with pytest.raises(InvalidInputError, match="non-zero"):
        scale_values(_image("numpy"), scale=0)


@pytest.mark.parametrize("backend", ["numpy", "dask"])
def test_remap_labels__lookup_table(backend):
    codes = np.array([[2001, 5001, 0], [20093, 777, 70000]], dtype=np.uint32)
    data = da.from_array(codes, chunks=1) if backend == "dask" else codes
    labels = xr.DataArray(data, dims=("y", "x"))
    with raise_if_dask_computes():
        out = remap_labels(labels, LEGEND)
    assert out.dtype == np.uint8
    assert out.values.tolist() == [[1, 2, 0], [3, 0, 0]]
    assert Legend.from_json(out.attrs["legend"]).values == LEGEND.values


def test_remap_labels__negative_codes_become_zero():
    labels = xr.DataArray(np.array([[-1, 2001]], dtype=np.int32), dims=("y", "x"))
    assert remap_labels(labels, LEGEND).values.tolist() == [[0, 1]]


def test_check_label_codes__warns_and_counts_unknown():
    labels = xr.DataArray(
        da.from_array(np.array([[2001, 777, 777], [0, 5001, 9]], dtype=np.uint16), chunks=1),
        dims=("y", "x"),
    )
    counts = label_code_counts(labels)
    assert counts == {0: 1, 9: 1, 777: 2, 2001: 1, 5001: 1}
    with pytest.warns(UserWarning, match=r"3 pixel\(s\) carry 2 code\(s\) missing"):
        unknown = check_label_codes(counts, LEGEND, nodata=0)
    assert unknown == {9: 1, 777: 2}
    with pytest.raises(InvalidInputError, match="missing from the legend"):
        check_label_codes(counts, LEGEND, strict=True)


def test_band_roles__sensors():
    assert band_roles(BANDS)["nir"] == "B5"
    assert band_roles(["B1", "B2", "B3", "B4", "B5", "B7"])["nir"] == "B4"
    assert band_roles(["B1_blue", "B4_nir", "B5_swir1"])["swir1"] == "B5_swir1"
    assert band_roles(["B2", "B3", "B4", "B8", "B11", "B12"])["swir2"] == "B12"
    assert band_roles(["HH", "HV"]) == {}
    with pytest.raises(InvalidInputError, match="sensor"):
        band_roles(["B1"], sensor="modis")


@pytest.mark.parametrize("backend", ["numpy", "dask"])
def test_indices__match_numpy(backend):
    img = scale_values(_image(backend))
    v = img.values
    b = {n: v[i] for i, n in enumerate(BANDS)}
    with raise_if_dask_computes():
        got = {"ndvi": ndvi(img), "ndwi": ndwi(img), "nbr": nbr(img)}
    with np.errstate(invalid="ignore"):
        want = {
            "ndvi": (b["B5"] - b["B4"]) / (b["B5"] + b["B4"]),
            "ndwi": (b["B3"] - b["B5"]) / (b["B3"] + b["B5"]),
            "nbr": (b["B5"] - b["B7"]) / (b["B5"] + b["B7"]),
        }
    for k in want:
        np.testing.assert_allclose(got[k].values, want[k], rtol=1e-5, equal_nan=True)


def test_indices__missing_band_is_a_clear_error():
    img = scale_values(_image("numpy")).sel(band=["B1", "B2"])
    with pytest.raises(InvalidInputError, match="expected a 'nir' band"):
        ndvi(img)


def test_stretch_limits__match_numpy_percentiles():
    img = scale_values(_image("dask", seed=4))
    lims = stretch_limits(img, percentiles=(2, 98))
    v = img.values
    for b in range(8):
        want = np.nanpercentile(v[b], [2, 98], method="inverted_cdf")  # nearest rank
        width = (np.nanmax(v[b]) - np.nanmin(v[b])) / 8192
        np.testing.assert_allclose(lims[b], want, atol=1.01 * width)


def test_false_colour__default_nir_swir1_swir2_lazy_in_unit_range():
    img = scale_values(_image("dask"))
    with raise_if_dask_computes(max_computes=2):  # the two streaming passes of the stretch
        rgb = false_colour(img)
    assert list(rgb["band"].values) == ["B5", "B6", "B7"]
    v = rgb.values
    assert np.nanmin(v) == 0.0
    assert np.nanmax(v) == 1.0
    assert np.isnan(v[:, 5, 7]).all()
    # about 2 % of valid pixels saturate at each end
    assert 0.01 < np.nanmean(v[0] == 0) < 0.035
    assert 0.01 < np.nanmean(v[0] == 1) < 0.035


def test_false_colour__needs_three_known_bands():
    img = scale_values(_image("numpy"))
    with pytest.raises(InvalidInputError, match="expected 3 bands"):
        false_colour(img, bands=["B5", "B6"])
    with pytest.raises(InvalidInputError, match="not in the image bands"):
        false_colour(img, bands=["B5", "B6", "B8"])
