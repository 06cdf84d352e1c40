"""molgen.formatting: the one spelling of table numbers, percentages, Markdown tables and JSON-safe values."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from molgen.formatting import fmt, jsonable, markdown_cells, markdown_table, mean_std, pct


# ------------------------------------------------------------------------------------------ fmt / pct
@pytest.mark.parametrize("value, kwargs, text", [
    (None, {}, "None"),                       # str(None) unless told
    (None, {"none": "n/a"}, "n/a"),
    (None, {"spec": ".2f", "none": "–"}, "–"),
    (3, {}, "3"),                             # ints as they are, never rounded
    (123456, {}, "123456"),
    (np.int64(7), {}, "7"),
    (True, {}, "True"),
    (1.23456, {}, "1.235"),                   # floats: 4 significant digits
    (12345.678, {}, "1.235e+04"),
    (0.0, {}, "0"),
    (np.float64(2.5), {}, "2.5"),             # numpy float64 is a float
    (float("nan"), {}, "nan"),
    (float("inf"), {}, "inf"),
    (1e-4, {}, "0.0001"),
    (1e-4, {"sci_below": 1e-3}, "1.000e-04"),  # small values keep their digits
    (-4e-4, {"sci_below": 1e-3}, "-4.000e-04"),
    (1e-3, {"sci_below": 1e-3}, "0.001"),
    (0.0, {"sci_below": 1e-3}, "0"),
    (float("nan"), {"sci_below": 1e-3}, "nan"),
    (2.345, {"spec": ".2f"}, "2.35"),
    (7, {"spec": ".0f"}, "7"),
    ("text", {}, "text"),
])
def test_fmt(value, kwargs, text):
    assert fmt(value, **kwargs) == text


@pytest.mark.parametrize("value, kwargs, text", [
    (0.8571, {}, "85.7%"),
    (0.8571, {"sep": " "}, "85.7 %"),
    (1, {}, "100.0%"),
    (0, {}, "0.0%"),
    (np.float32(0.5), {}, "50.0%"),
    (0.12345, {"digits": 2}, "12.35%"),
    (None, {}, "n/a"),
    (None, {"none": "–", "sep": " "}, "–"),
    (float("nan"), {}, "nan%"),
])
def test_pct(value, kwargs, text):
    assert pct(value, **kwargs) == text


def test_mean_std_skips_non_finite_and_says_when_nothing_is_left():
    assert mean_std([1.0, 3.0, float("nan"), float("inf")]) == "2.00 (1.00)"   # population std
    assert mean_std([70.0, 72.0], ".1f") == "71.0 (1.0)"
    assert mean_std([]) == "n/a" and mean_std([float("nan")], none="–") == "–"


# ------------------------------------------------------------------------------------------ tables
def test_markdown_table_layout_and_alignment():
    assert markdown_table(["a", "b"], [[1, 2.5], ["x", None]]) == "| a | b |\n|---|---|\n| 1 | 2.5 |\n| x | None |"
    lines = markdown_table(["name", "n", "mid", "any"], [["x", 1, 2, 3]], align="lrc-").splitlines()
    assert lines[1] == "|:---|---:|:---:|---|"
    assert markdown_table(["a", "b"], [], align=["r", None]).splitlines() == ["| a | b |", "|---:|---|"]
    assert markdown_table(["only"], [[""]]).splitlines()[-1] == "|  |"   # an empty cell keeps its column


def test_markdown_table_escapes_pipes_and_newlines():
    table = markdown_table(["key | name", "value"], [["C-C|1", "two\nlines"]])
    head, sep, row = table.splitlines()
    assert head == "| key \\| name | value |" and row == "| C-C\\|1 | two lines |"
    assert markdown_cells(head) == ["key | name", "value"]
    assert markdown_cells(row) == ["C-C|1", "two lines"]
    assert markdown_cells(sep) == ["---", "---"]
    # a backslash before a pipe survives the round trip
    assert markdown_cells(markdown_table(["a\\|b"], []).splitlines()[0]) == ["a\\|b"]


def test_markdown_cells_reads_hand_written_lines():
    assert markdown_cells("| a |  | c |") == ["a", "", "c"]
    assert markdown_cells("| a | b | trailing") == ["a", "b", "trailing"]


@pytest.mark.parametrize("align, message", [("lr", "align has 2 entries for 3 columns"),
                                            ("lrx", "unknown alignment 'x'")])
def test_markdown_table_rejects_bad_align(align, message):
    with pytest.raises(ValueError, match=message):
        markdown_table(["a", "b", "c"], [], align=align)


def test_markdown_table_rejects_ragged_rows():
    with pytest.raises(ValueError, match="table row 1 has 1 cells for 2 columns"):
        markdown_table(["a", "b"], [[1, 2], [3]])


# ------------------------------------------------------------------------------------------ jsonable
def test_jsonable_numpy_and_torch_scalars_become_python_numbers():
    out = jsonable({"i": np.int64(3), "f": np.float32(0.5), "b": np.bool_(True), "t": torch.tensor(2.5),
                    "ti": torch.tensor(4), "one": np.array([1.5]), "big": np.arange(3), "tt": torch.ones(2, 2),
                    "py": 1.25})
    assert out == {"i": 3, "f": 0.5, "b": True, "t": 2.5, "ti": 4, "one": 1.5, "big": [0, 1, 2],
                   "tt": [[1.0, 1.0], [1.0, 1.0]], "py": 1.25}
    assert [type(out[k]) for k in ("i", "f", "b", "t", "ti")] == [int, float, bool, float, int]
    json.dumps(out)


def test_jsonable_nested_containers_keys_and_unknown_objects():
    out = jsonable({1: (np.int32(1), [np.float64(2.0), {"x": None}]), "p": Path("/tmp/x"), "s": {3}})
    assert out == {"1": [1, [2.0, {"x": None}]], "p": "/tmp/x", "s": "{3}"}
    assert jsonable({None: 1, 2.5: 2, False: 3}) == {"null": 1, "2.5": 2, "false": 3}   # as json.dumps writes keys
    assert jsonable({np.int64(5): "a"}) == {"5": "a"}


def test_jsonable_non_finite_kept_or_nulled():
    kept = jsonable({"a": float("nan"), "b": [np.float64("inf")]})
    assert math.isnan(kept["a"]) and kept["b"] == [math.inf]
    assert jsonable({"a": float("nan"), "b": [np.float32("-inf")], "c": 1.0}, finite=True) == {
        "a": None, "b": [None], "c": 1.0}
    json.loads(json.dumps(jsonable({"x": float("nan")}, finite=True), allow_nan=False))
