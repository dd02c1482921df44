"""How numbers read in the report: accuracy as %, throughput in img/s, params in M, FLOPs in M/G."""

from __future__ import annotations

import math

import pandas as pd

from imgbench import schema
from imgbench.report.tables import LOG_SCALE_METRICS
from imgbench.terminal import noun_form, plural  # the English plural rule lives in terminal; the pages use it here

MISSING = "–"
HEADING_UNITS = ("img/s", "ms", "MB")  # leaderboard headings carry these units, so cells are bare numbers


def is_percent(metric: str) -> bool:
    return schema.unit(metric) == schema.FRACTION


def number(metric: str, value: float) -> str:
    """``value`` of ``metric`` with its unit, e.g. 0.8531 accuracy -> '85.31 %', 2.5e6 params -> '2.50 M'."""
    if value is None or pd.isna(value):
        return MISSING
    unit = schema.unit(metric)
    if unit == schema.FRACTION:
        return f"{100 * value:.2f} %"
    if unit == "img/s":
        return f"{value:,.0f} img/s" if value >= 100 else f"{value:,.1f} img/s"
    if unit == "ms":
        return f"{value:.2f} ms"
    if metric == "params":  # always in millions, so a column of sizes compares at a glance
        return f"{value / 1e6:.3g} M"
    if unit == "FLOPs":
        return _scaled(value, "")
    if unit == "MB":
        return f"{value:,.0f} MB" if value >= 10 else f"{value:.1f} MB"
    if unit == "s":
        return f"{value:,.1f} s"
    return f"{value:,.4g}"


def unit_suffix(metric: str) -> str:
    """The unit a table heading carries so that its cells can be bare numbers ('' when cells keep theirs)."""
    unit = schema.unit(metric)
    return f" ({unit})" if unit in HEADING_UNITS else ""


def cell(metric: str, value: float) -> str:
    """``number`` without the unit that ``unit_suffix`` moved into the heading."""
    text = number(metric, value)
    suffix = unit_suffix(metric).strip(" ()")
    return text.removesuffix(f" {suffix}") if suffix else text


def half_width(metric: str, low: float, high: float) -> str:
    """The ± part of a symmetric interval in the metric's display unit ('' when there is no interval); for a
    log-scale interval (throughputs) the factor it spans either way, '×/÷ 1.05'."""
    if pd.isna(low) or pd.isna(high):
        return ""
    if metric in LOG_SCALE_METRICS:
        factor = math.sqrt(high / low)
        return f"×/÷ {factor:.2f}" if factor > 1 else ""
    width = (high - low) / 2
    if width == 0:  # a deterministic quantity (params, FLOPs): the same in every seed
        return ""
    if is_percent(metric):
        return f"± {100 * width:.2f}"
    if schema.unit(metric) == "ms":
        return f"± {width:.2f}"
    if metric in ("params", "flops"):
        return f"± {_scaled(width, '')}"
    return f"± {width:,.0f}" if width >= 10 else f"± {width:.1f}"


def interval(metric: str, low: float, high: float) -> str:
    """An asymmetric interval in the metric's display unit, '[94.10, 98.20]' for 94.1 % to 98.2 % ('' without)."""
    if pd.isna(low) or pd.isna(high):
        return ""
    if is_percent(metric):
        return f"[{100 * low:.2f}, {100 * high:.2f}]"
    return f"[{low:,.4g}, {high:,.4g}]"


def points(value: float) -> str:
    """A difference of two fractions in percentage points: 0.0167 -> '+1.67 pt'."""
    return MISSING if pd.isna(value) else f"{100 * value:+.2f} pt"


def points_interval(low: float, high: float, unit: str = " pt") -> str:
    """The interval of a difference of two fractions in points: '[+0.28, +3.20] pt' ('' without)."""
    return "" if pd.isna(low) or pd.isna(high) else f"[{100 * low:+.2f}, {100 * high:+.2f}]{unit}"


def p_value(value: float) -> str:
    if pd.isna(value):
        return MISSING
    return "p < 0.0001" if value < 1e-4 else f"p = {value:.4f}" if value < 0.01 else f"p = {value:.3f}"


def change(metric: str, delta: float, percent: float) -> str:
    if is_percent(metric):
        return points(delta)
    return MISSING if pd.isna(percent) else f"{percent:+.1f} %"


def _scaled(value: float, unit: str) -> str:
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}".rstrip()
    return f"{value:.0f} {unit}".rstrip() if not math.isnan(value) else MISSING
