import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kerinci_xr.errors import InputFileNotFoundError, LegendError
from kerinci_xr.legend import NODATA_ID, Legend, read_legend

from .conftest import shared_file


def test_read_legend__real_kerinci_file():
    lg = read_legend(shared_file("kerinci", "lc.json"))
    assert lg.n_classes == 22
    assert lg.values[0] == 2001
    assert lg.values[-1] == 50011
    assert lg.ids == tuple(range(1, 23))
    assert lg.name_of(1) == "Primary dryland forest"
    assert lg.name_of(NODATA_ID) == "nodata"
    assert lg.colors[0] == "#006400"
    assert lg.rgb[1].tolist() == [0, 100, 0]
    assert lg.rgb[0].tolist() == [0, 0, 0]
    lut = lg.lut
    assert lut[2001] == 1
    assert lut[50011] == 22
    assert lut[2003] == 0
    assert lut[0] == 0
    assert lut.dtype == np.uint8


def test_legend__hex_with_and_without_hash():
    lg = Legend(values=(5, 7), labels=("a", "b"), palette=("#00ff00", "FF0000"))
    assert lg.palette == ("00FF00", "FF0000")
    assert lg.colors == ("#00FF00", "#FF0000")


def test_legend__round_trips_through_json_attrs(tmp_path):
    lg = read_legend(shared_file("nc_landsat7", "nc_lc.json"))
    again = Legend.from_json(lg.to_json())
    assert again.values == lg.values
    assert again.labels == lg.labels
    assert again.palette == lg.palette
    lg.write(tmp_path / "lc.json")
    assert read_legend(tmp_path / "lc.json").to_dict() == lg.to_dict()


@given(
    st.lists(st.integers(1, 60000), min_size=1, max_size=40, unique=True),
    st.data(),
)
def test_legend__lut_maps_every_code_to_its_id(codes, data):
    colours = data.draw(
        st.lists(
            st.from_regex(r"#?[0-9A-Fa-f]{6}", fullmatch=True),
            min_size=len(codes),
            max_size=len(codes),
        )
    )
    lg = Legend(values=codes, labels=[f"c{c}" for c in codes], palette=colours)
    lut = lg.lut
    for i, c in enumerate(codes, start=1):
        assert lut[c] == i
        assert lg.id_of(c) == i
    assert np.count_nonzero(lut) == len(codes)
    assert Legend.from_json(lg.to_json()).lut.tolist() == lut.tolist()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", "not JSON"),
        ('{"values": [1], "label": ["a"]}', "missing \\['palette'\\]"),
        ('{"values": [1, 2], "label": ["a"], "palette": ["000000", "111111"]}', "equal length"),
        (
            '{"values": [1, 1], "label": ["a", "b"], "palette": ["000000", "111111"]}',
            "duplicates \\[1\\]",
        ),
        ('{"values": [1], "label": ["a"], "palette": ["green"]}', "6-digit hex"),
        ('{"values": [1], "label": ["a"], "palette": ["#12345"]}', "6-digit hex"),
        ('{"values": ["x"], "label": ["a"], "palette": ["000000"]}', "integers"),
        ('{"values": [0], "label": ["a"], "palette": ["000000"]}', "reserved for nodata"),
        ('{"values": [], "label": [], "palette": []}', "at least one class"),
        ("[1, 2]", "JSON object"),
    ],
)
def test_read_legend__bad_files(tmp_path, text, match):
    path = tmp_path / "lc.json"
    path.write_text(text)
    with pytest.raises(LegendError, match=match) as info:
        read_legend(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_read_legend__missing_file(tmp_path):
    with pytest.raises(InputFileNotFoundError, match="not found"):
        read_legend(tmp_path / "nope.json")


def test_legend__json_keys_are_the_original_format():
    lg = Legend(values=(3,), labels=("x",), palette=("#ABCDEF",))
    assert json.loads(lg.to_json()) == {"values": [3], "label": ["x"], "palette": ["ABCDEF"]}
