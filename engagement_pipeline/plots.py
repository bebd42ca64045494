"""Every chart of the package, in one look: ROC, precision-recall and reliability curves as PNG bytes.

    png = curves_png("roc", predictions, y, horizons, PlotLabel("engagement-lstm v3", "test period", "2025-09-14"))

`predictions` maps a model name to P(continue) [n, H] (columns = `horizons`),
`y` is [n, H] with 1 = continues, 0 = stops, NaN = unknown (left out of that
horizon's panel). One panel per horizon; the figure's title names the model
and version, what the rows are, the data's end date and the row count, so a
PNG read on its own (in MLflow, in a report) says what it shows. Axes carry
their units (rates and probabilities, 0 to 1). The daily report reuses
`curves_png` for its realized-outcome plots.

matplotlib (Agg) and sklearn are imported inside the function.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

KINDS = ("roc", "pr", "calibration")
AXES = {
    "roc": ("false positive rate (share of stops flagged as continuing)", "true positive rate"),
    "pr": ("recall (share of continuations found)", "precision"),
    "calibration": ("mean predicted P(continue)", "observed share that continued"),
}
TITLES = {"roc": "ROC curves", "pr": "Precision-recall curves", "calibration": "Reliability (calibration)"}


@dataclass(frozen=True)
class PlotLabel:
    """What the figure title says: which model, on which rows, data up to which day."""

    model: str  # e.g. "engagement-lstm v3"
    rows: str  # e.g. "test period" or "scored 2025-09-14, outcomes known"
    data_end: str  # e.g. "2025-09-14"


def curves_png(
    kind: str, predictions: dict[str, np.ndarray], y: np.ndarray, horizons: list[int], label: PlotLabel
) -> bytes:
    """ROC ('roc'), precision-recall ('pr') or reliability ('calibration') curves, one panel per horizon."""
    if kind not in KINDS:
        raise ValueError(f"unknown plot kind {kind!r}: one of {KINDS}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(horizons), figsize=(4.5 * len(horizons), 4.4), squeeze=False)
    n_rows = 0
    for h, (ax, minutes) in enumerate(zip(axes[0], horizons)):
        known = ~np.isnan(y[:, h])
        n_rows = max(n_rows, int(known.sum()))
        for name, p_all in predictions.items():
            draw_curve(ax, kind, name, y[known, h], p_all[known, h])
        if kind in ("roc", "calibration"):
            ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="chance" if kind == "roc" else None)
        xlabel, ylabel = AXES[kind]
        ax.set(title=f"horizon {minutes} min ({int(known.sum()):,} rows)", xlabel=xlabel, ylabel=ylabel)
        ax.set(xlim=(0, 1), ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right" if kind != "pr" else "lower left")
    fig.suptitle(f"{TITLES[kind]}: {label.model}, {label.rows}, data to {label.data_end}", fontsize=11)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def draw_curve(ax, kind: str, name: str, y: np.ndarray, p: np.ndarray) -> None:
    """One model's curve on one panel; nothing where the curve is undefined (one outcome, or a constant model)."""
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import precision_recall_curve, roc_curve

    two_outcomes = len(np.unique(y)) == 2
    if kind == "roc" and two_outcomes:
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=name)
    elif kind == "pr" and two_outcomes:
        precision, recall, _ = precision_recall_curve(y, p)
        ax.plot(recall, precision, label=name)
    elif kind == "calibration" and name != "base_rate" and len(y):
        observed, predicted = calibration_curve(y, p, n_bins=10, strategy="quantile")
        ax.plot(predicted, observed, marker="o", markersize=3, label=name)


def png_markdown(name: str, png: bytes) -> str:
    """Markdown that embeds a PNG (Dagster metadata, reports)."""
    import base64

    return f"![{name}](data:image/png;base64,{base64.b64encode(png).decode()})"
