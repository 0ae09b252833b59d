"""Learning parameters, scalers and windows: the pieces every forecaster shares."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsloom.errors import TsloomError
from tsloom.forecast.params import LearningParams
from tsloom.forecast.scalers import KINDS, FittedScaler, fit_scaler
from tsloom.forecast.windows import count_windows, make_windows, split_boundary

BASE = dict(
    target="a.b.OT",
    features=["a.b.OT", "a.b.HUFL"],
    input_width="24h",
    output_width="6h",
    freq="1h",
)


def test_param_id_is_sha1_of_canonical_json_and_stable() -> None:
    p = LearningParams.load(BASE)
    assert p.param_id == hashlib.sha1(p.canonical_json().encode()).hexdigest()
    assert len(p.param_id) == 40
    same = LearningParams.load({**BASE, "input_width": "1440min", "device": "cuda"})
    assert same.param_id == p.param_id  # same duration written differently; device not in id
    assert LearningParams.load({**BASE, "epochs": 21}).param_id != p.param_id
    assert json.loads(p.canonical_json())["input_width"] == "86400s"
    assert (p.input_steps, p.output_steps, p.output_dim, p.target_index) == (24, 6, 6, 0)
    assert LearningParams.load({**BASE, "output": "max"}).output_dim == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"input_width": "90min"}, "not a whole number of reference periods"),
        ({"target": "a.b.LULL"}, "not among the features"),
        ({"method": "transformer"}, "method"),
        ({"split": 1.5}, "split"),
        ({"scaler": "quantile"}, "scaler"),
        ({"freq": "soon"}, "duration"),
    ],
)
def test_bad_parameters_are_clear(change: dict, message: str) -> None:
    with pytest.raises(TsloomError, match=message):
        LearningParams.load({**BASE, **change})


def test_features_default_to_the_target() -> None:
    p = LearningParams(target="x", input_width="2h", output_width="1h", freq="1h")
    assert p.features == ("x",)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=25, deadline=None)
@given(data=st.lists(st.floats(0.01, 1e4), min_size=8, max_size=50))
def test_every_scaler_round_trips(kind: str, data: list[float]) -> None:
    x = np.column_stack([np.asarray(data), np.asarray(data)[::-1] + 1.0])
    scaler = fit_scaler(kind, x, ("a", "b"))
    back = scaler.inverse(scaler.transform(x))
    np.testing.assert_allclose(back, x, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(scaler.inverse(scaler.transform(x)[:, 1], "b"), x[:, 1], rtol=1e-9)
    restored = FittedScaler.from_state(json.loads(json.dumps(scaler.state())))
    assert restored == scaler and restored.scaler_id == scaler.scaler_id


def test_log_scalers_refuse_non_positive_data() -> None:
    x = np.array([[1.0], [0.0], [3.0]])
    with pytest.raises(TsloomError, match="feature 'OT' goes down to 0"):
        fit_scaler("log", x, ("OT",))
    fit_scaler("robust_log", x, ("OT",))  # log1p is fine at 0
    with pytest.raises(TsloomError, match="above -1"):
        fit_scaler("robust_log", x - 2, ("OT",))


def test_window_counts_and_alignment_on_a_known_grid() -> None:
    values = np.column_stack([np.arange(10.0), 100 + np.arange(10.0)])  # target, other
    w = make_windows(values, input_steps=3, output_steps=2, target_index=0)
    assert len(w) == count_windows(10, 3, 2) == 6
    assert w.x.shape == (6, 3, 2) and w.y.shape == (6, 2)
    np.testing.assert_array_equal(w.x[0, :, 0], [0, 1, 2])
    np.testing.assert_array_equal(w.x[0, :, 1], [100, 101, 102])
    np.testing.assert_array_equal(w.y[0], [3, 4])
    np.testing.assert_array_equal(w.y[-1], [8, 9])
    for how, expected in (("mean", 3.5), ("min", 3.0), ("max", 4.0)):
        summary = make_windows(values, input_steps=3, output_steps=2, target_index=0, output=how)
        assert summary.y.shape == (6, 1) and summary.y[0, 0] == expected
    with pytest.raises(TsloomError, match="too few for one window"):
        make_windows(values[:4], input_steps=3, output_steps=2, target_index=0)


def test_split_boundary_shares_no_target() -> None:
    boundary = split_boundary(100, 10, 5, 0.8)
    assert boundary == 80
    assert count_windows(boundary, 10, 5) == 66  # training windows end at row 79
    assert count_windows(100 - boundary + 10, 10, 5) == 16  # first target row is 80
    with pytest.raises(TsloomError, match="0 validation windows"):
        split_boundary(20, 10, 5, 0.8)


def test_long_widths_keep_distinct_ids_and_round_trip() -> None:
    two_weeks = LearningParams.load({**BASE, "input_width": "336h"})
    plus_an_hour = LearningParams.load({**BASE, "input_width": "337h"})
    assert two_weeks.param_id != plus_an_hour.param_id
    assert json.loads(two_weeks.canonical_json())["input_width"] == "1209600s"
    again = LearningParams.load(json.loads(two_weeks.canonical_json()))
    assert again.param_id == two_weeks.param_id


def test_knobs_added_later_leave_existing_ids_alone() -> None:
    plain = LearningParams.load(BASE)
    assert "subtract_last" not in plain.canonical()
    assert LearningParams.load({**BASE, "subtract_last": False}).param_id == plain.param_id
    assert LearningParams.load({**BASE, "subtract_last": True}).param_id != plain.param_id
