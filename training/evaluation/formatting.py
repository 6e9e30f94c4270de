"""Number formatting shared by the evaluation tables and reports."""
from __future__ import annotations

import math
import numbers


def format_number(value, digits: int = 4, width: int = 0) -> str:
    """A real number with `digits` decimals, '-' for None or NaN, integers and text as they are;
    right-aligned to `width` characters (a missing value lines up with the numbers)."""
    if value is None:
        text = '-'
    elif isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        text = '-' if math.isnan(value) else f'{value:.{digits}f}'
    else:
        text = str(value)
    return text.rjust(width)
