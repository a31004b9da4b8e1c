import dask.array as da
import numpy as np
import pytest

from kerinci_xr.legend import Legend
from kerinci_xr.metrics import accuracy_report, confusion_matrix, format_report, write_report

LEGEND = Legend(
    values=(10, 20, 30), labels=("forest", "water", "rice"), palette=("006400", "0000FF", "FFFF00")
)


def _pair():
    t = np.array([[1, 1, 1, 2], [2, 3, 3, 0], [1, 2, 3, 0]])
    p = np.array([[1, 1, 2, 2], [2, 3, 1, 3], [1, 0, 3, 2]])
    return t, p


@pytest.mark.parametrize("backend", ["numpy", "dask"])
def test_confusion_matrix__by_hand(backend):
    t, p = _pair()
    if backend == "dask":
        t, p = da.from_array(t, chunks=2), da.from_array(p, chunks=2)
    cm = confusion_matrix(t, p, 3)
    # rows: reference 0..3, cols: predicted 0..3; reference 0 ignored
    want = np.array(
        [
            [0, 0, 0, 0],
            [0, 3, 1, 0],  # forest: 3 right, 1 called water
            [1, 0, 2, 0],  # water: 2 right, 1 not predicted (0)
            [0, 1, 0, 2],  # rice: 2 right, 1 called forest
        ]
    )
    np.testing.assert_array_equal(cm, want)


def test_accuracy_report__oa_kappa_per_class_by_hand():
    t, p = _pair()
    rep = accuracy_report(confusion_matrix(t, p, 3), LEGEND)
    n = 10
    oa = 7 / n
    ref = np.array([4, 3, 3])
    pred = np.array([4, 3, 2])
    pe = (ref * pred).sum() / n**2
    assert rep["overall_accuracy"] == pytest.approx(oa, abs=1e-6)
    assert rep["kappa"] == pytest.approx((oa - pe) / (1 - pe), abs=1e-6)
    forest, water, rice = rep["classes"]
    assert forest["producers_accuracy"] == pytest.approx(3 / 4)
    assert forest["users_accuracy"] == pytest.approx(3 / 4)
    assert water["producers_accuracy"] == pytest.approx(2 / 3)
    assert water["users_accuracy"] == pytest.approx(2 / 3)
    assert rice["users_accuracy"] == pytest.approx(1.0)
    assert rice["producers_accuracy"] == pytest.approx(2 / 3)
    assert rice["iou"] == pytest.approx(2 / 3)
    assert rice["f1"] == pytest.approx(4 / 5)
    assert forest["iou"] == pytest.approx(3 / 5)
    assert rep["mean_iou"] == pytest.approx(np.mean([3 / 5, 2 / 4, 2 / 3]), abs=1e-6)
    assert [c["support"] for c in rep["classes"]] == [4, 3, 3]
    text = format_report(rep)
    assert "forest" in text
    assert "kappa" in text


def test_accuracy_report__perfect_and_empty(tmp_path):
    t = np.array([[1, 2, 3]])
    rep = accuracy_report(confusion_matrix(t, t, 3), LEGEND)
    assert rep["overall_accuracy"] == 1.0
    assert rep["mean_iou"] == 1.0
    empty = accuracy_report(np.zeros((4, 4)), LEGEND)
    assert empty["overall_accuracy"] is None
    assert empty["mean_iou"] is None
    path = write_report(rep, tmp_path / "m.json")
    assert path.read_text().startswith("{")
