"""Small text helpers every report shares: numbers and percentages for table cells, Markdown tables and
JSON-safe values. Layer 0 (standard library and numpy only), so data, validation, evaluation, runner and
pipelines all use the same spelling of each.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

#: Column alignment codes of :func:`markdown_table` and their separator cells.
ALIGN = {None: "---", "": "---", "-": "---", "l": ":---", "c": ":---:", "r": "---:"}


def fmt(v: Any, spec: str | None = None, *, none: str = "None", sci_below: float = 0.0) -> str:
    """A value for a table cell.

    Args:
        v: the value.
        spec: a format spec (``".2f"``, ``".0f"``, ...) applied to any non-None value; None: floats (numpy
            ``float64`` included) to 4 significant digits (``".4g"``), anything else ``str(v)``.
        none: what None reads as (default ``"None"``, i.e. ``str(None)``; reports use ``"n/a"`` or ``"–"``).
        sci_below: without ``spec``, floats with ``0 < |v| < sci_below`` are written ``".3e"`` (also 4
            significant digits) instead of being rounded to nothing by ``".4g"`` (e.g. ``1e-3``).

    ``fmt(0.0001234, sci_below=1e-3) == "1.234e-04"``, ``fmt(None, ".2f", none="–") == "–"``; NaN reads ``"nan"``.
    """
    if v is None:
        return none
    if spec is not None:
        return format(v, spec)
    if isinstance(v, float):
        return f"{v:.3e}" if 0 < abs(v) < sci_below else f"{v:.4g}"
    return str(v)


def pct(v: Any, digits: int = 1, *, none: str = "n/a", sep: str = "") -> str:
    """A fraction as a percentage: ``pct(0.8571) == "85.7%"``; ``sep=" "`` gives ``"85.7 %"``; None reads
    ``none``; NaN reads ``"nan%"``."""
    if v is None:
        return none
    return f"{100 * v:.{digits}f}{sep}%"


def mean_std(values: Iterable[float], spec: str = ".2f", *, none: str = "n/a") -> str:
    """``"mean (std)"`` of the finite values (population std), each written with ``spec``; ``none`` when no
    value is finite."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    return f"{format(v.mean(), spec)} ({format(v.std(), spec)})" if len(v) else none


def _cell(value: Any) -> str:
    """A table cell: ``str(value)`` on one line, ``|`` escaped (``\\|``) so it cannot split the cell."""
    return str(value).replace("\r\n", " ").replace("\n", " ").replace("|", "\\|")


def markdown_table(headers: Sequence[Any], rows: Iterable[Sequence[Any]],
                   align: str | Sequence[str | None] | None = None) -> str:
    """A GitHub-flavoured Markdown table, one line per row, without a trailing newline;
    ``markdown_table(["a", "b"], [[1, 2]])`` is::

        | a | b |
        |---|---|
        | 1 | 2 |

    and with ``align="lr"`` the second line is ``|:---|---:|``.

    Cells are written with ``str`` (format numbers first: :func:`fmt`, :func:`pct`), on one line, with ``|``
    escaped as ``\\|``. ``align``: None (``---`` everywhere) or one code per column, as a string (``"lrc"``)
    or a sequence: ``l`` left, ``r`` right, ``c`` centre, ``-``/``""``/None unspecified. Raises ValueError
    when a row or ``align`` does not have one entry per header.
    """
    headers = list(headers)
    codes = [None] * len(headers) if align is None else list(align)
    if len(codes) != len(headers):
        raise ValueError(f"align has {len(codes)} entries for {len(headers)} columns")
    bad = [c for c in codes if c not in ALIGN]
    if bad:
        raise ValueError(f"unknown alignment {bad[0]!r} (use l, r, c or -)")
    lines = ["| " + " | ".join(_cell(h) for h in headers) + " |", "|" + "".join(ALIGN[c] + "|" for c in codes)]
    for k, row in enumerate(rows):
        row = list(row)
        if len(row) != len(headers):
            raise ValueError(f"table row {k} has {len(row)} cells for {len(headers)} columns: {row}")
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    return "\n".join(lines)


def markdown_cells(line: str) -> list[str]:
    """The cells of a Markdown table line written by :func:`markdown_table` (``\\|`` unescaped), stripped."""
    cells, cur, k, body = [], [], 0, line.strip()
    body = body[1:] if body.startswith("|") else body
    while k < len(body):
        ch = body[k]
        if ch == "\\" and body[k + 1: k + 2] == "|":
            cur.append("|")
            k += 2
            continue
        if ch == "|":
            cells.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
        k += 1
    if "".join(cur).strip():
        cells.append("".join(cur).strip())
    return cells


def _key(k: Any) -> str:
    """A dict key as JSON writes it (``json.dumps``'s rules for str/int/float/bool/None; ``str`` otherwise)."""
    if isinstance(k, str):
        return str.__str__(k)
    k = jsonable(k) if hasattr(k, "item") else k
    if isinstance(k, (bool, float)) or k is None:
        return json.dumps(k)
    return str(k)


def jsonable(obj: Any, *, finite: bool = False) -> Any:
    """``obj`` as plain JSON values: dicts (keys as JSON writes them: ``1 -> "1"``, ``True -> "true"``), lists
    (from lists and tuples), str, int, float, bool, None.

    numpy and torch scalars (and one-element arrays/tensors) become Python numbers via ``.item()``, larger
    arrays/tensors nested lists; anything else (a Path, a set, ...) its ``str``. ``finite=True``: NaN and
    ±inf become None (strict JSON, what ``metrics.json`` of a validation holds); by default they stay floats
    (``json.dumps`` writes them as ``NaN``/``Infinity``).
    """
    if isinstance(obj, dict):
        return {_key(k): jsonable(v, finite=finite) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v, finite=finite) for v in obj]
    if obj is None or isinstance(obj, bool):
        return obj
    if isinstance(obj, str):
        return str.__str__(obj)
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        v = float(obj)
        return None if finite and not math.isfinite(v) else v
    if hasattr(obj, "item"):
        try:
            return jsonable(obj.item(), finite=finite)
        except (ValueError, RuntimeError):  # more than one element (numpy: ValueError, torch: RuntimeError)
            if hasattr(obj, "tolist"):
                return jsonable(obj.tolist(), finite=finite)
    return str(obj)
