"""Small text helpers shared by reports: number formatting and JSON-safe values."""
from __future__ import annotations

import json
from typing import Any


def fmt(v: Any) -> str:
    """A metric for a table: floats to 4 significant digits, everything else as ``str``."""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def jsonable(obj: Any) -> Any:
    """``obj`` with numpy/torch scalars turned into Python numbers and anything else unknown into strings."""
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
