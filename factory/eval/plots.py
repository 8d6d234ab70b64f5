"""Distribution plots as embeddable PNGs (matplotlib's Agg backend, no display needed).

Returns data: URIs so the report stays one self-contained file. Without matplotlib (it is
in the `eval` extra) the plots are left out and the report says so.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

FIGURE_SIZE = (5.0, 3.0)  # inches; at 100 dpi a 500x300 PNG
DPI = 100


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _figure():
    import matplotlib

    matplotlib.use("Agg", force=True)  # headless: never open a window
    from matplotlib.figure import Figure

    # a bare Figure, not pyplot: no global state shared with other threads or plots
    return Figure(figsize=FIGURE_SIZE, dpi=DPI)


def _data_uri(figure) -> str:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def histogram(
    series: Mapping[str, Sequence[float]],
    title: str,
    xlabel: str,
    bins: int | Sequence[float] = 20,
) -> str | None:
    """One histogram with a series per label (overlaid, translucent); None without data."""
    series = {label: list(values) for label, values in series.items() if len(values)}
    if not series:
        return None
    figure = _figure()
    axes = figure.add_subplot()
    for label, values in series.items():
        axes.hist(values, bins=bins, alpha=0.6, label=f"{label} (n={len(values)})")
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel("count")
    axes.legend(fontsize="small")
    return _data_uri(figure)


def bars(counts: Mapping[str, int], title: str, xlabel: str, limit: int = 15) -> str | None:
    """Horizontal bars of the `limit` largest counts; None without data."""
    top = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:limit]
    if not top:
        return None
    figure = _figure()
    axes = figure.add_subplot()
    labels = [label for label, _ in reversed(top)]
    axes.barh(labels, [count for _, count in reversed(top)], color="#4c72b0")
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.tick_params(axis="y", labelsize="small")
    return _data_uri(figure)
