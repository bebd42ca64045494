"""Every plot of the package, in one look: PNG bytes out, for the HTML report, Dagster metadata and MLflow alike.

Each plot is a plain function of arrays that returns PNG bytes. The shared
look lives in a few helpers: `STYLE` (matplotlib rc settings), `styled`
(a decorator that draws inside them, with the Agg backend, so no display is
needed) and `new_figure` / `finish` (a title, a stamp line naming the model,
its version and the date, and PNG encoding). matplotlib is imported inside
the functions: importing this module costs nothing.

- Training's evaluation: `curves_png` (ROC, precision-recall and reliability
  curves, one panel per horizon, titled with a `PlotLabel`).
- The morning report: `at_risk_png`, `dropoff_png`, `realized_quality_png`,
  `drift_png`.

Colours: the day (or the model) in `DAY`, the reference (training period,
test interval) in `REFERENCE`, alarms in `ALARM`, things not judged in `MUTED`.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass

import numpy as np

DAY = "#1f5fa8"
REFERENCE = "#9a9a9a"
ALARM = "#c0392b"
MUTED = "#c8c8c8"
STYLE = {
    "figure.dpi": 90,
    "figure.facecolor": "white",
    "axes.facecolor": "white",
    "axes.grid": True,
    "grid.color": "#e6e6e6",
    "grid.linewidth": 0.8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "font.family": "DejaVu Sans",
}


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def styled(draw):
    """Run a plotting function inside the package's rc settings."""

    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        import matplotlib

        pyplot()
        with matplotlib.rc_context(STYLE):
            return draw(*args, **kwargs)

    return wrapper


def stamp(model_name: str | None, model_version: int | str | None, day: str | None) -> str:
    """The line under every title: which model, which version, which day."""
    model = f"{model_name} v{model_version}" if model_name and model_version is not None else "no model"
    return f"{model} · {day} (UTC)" if day else model


def new_figure(title: str, subtitle: str, ncols: int = 1, nrows: int = 1, width: float = 4.6, height: float = 3.6):
    """A figure of nrows x ncols panels (axes always 2-D) with the title and the stamp line on top."""
    plt = pyplot()
    total_height = height * nrows + 0.7
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, total_height), squeeze=False)
    fig.text(0.5, 1 - 0.1 / total_height, title, ha="center", va="top", fontsize=12, fontweight="bold")
    fig.text(0.5, 1 - 0.38 / total_height, subtitle, ha="center", va="top", fontsize=9, color="#555555")
    return fig, axes


def finish(fig) -> bytes:
    """Lay the panels out under the two title lines and encode the figure as PNG."""
    plt = pyplot()
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.62 / fig.get_figheight()))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def empty_panel(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#555555", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


# --------------------------------------------------------------------------- the morning report


@styled
def at_risk_png(
    p_continue: np.ndarray, horizon: int, n_listed: int, subtitle: str, threshold: float | None = None
) -> bytes:
    """Histogram of the day's volunteers by P(still working `horizon` min after their last classification).

    The line marks `threshold` (the report's drift-away rule) when given, else the `n_listed` lowest.
    """
    fig, axes = new_figure("Who is drifting away", subtitle, width=6.0)
    ax = axes[0, 0]
    p = np.asarray(p_continue, dtype=np.float64)
    if len(p) == 0:
        empty_panel(ax, "no volunteer was active this day")
        return finish(fig)
    bins = np.linspace(0, 1, 21)
    ax.hist(p, bins=bins, color=DAY, alpha=0.85)
    if threshold is not None and np.isfinite(threshold):
        flagged = int(np.sum(p <= threshold))
        ax.axvline(threshold, color=ALARM, linestyle="--", linewidth=1.2)
        ax.text(
            threshold, ax.get_ylim()[1] * 0.95, f" {flagged} likely to drift away", color=ALARM, fontsize=8, va="top"
        )
    elif 0 < n_listed <= len(p):
        cut = np.sort(p)[n_listed - 1]
        ax.axvline(cut, color=ALARM, linestyle="--", linewidth=1.2)
        ax.text(cut, ax.get_ylim()[1] * 0.95, f" the {n_listed} listed", color=ALARM, fontsize=8, va="top")
    ax.set(
        xlabel=f"P(still working {horizon} min after the last classification)",
        ylabel="volunteers",
        title=f"{len(p):,} volunteers active this day",
        xlim=(0, 1),
    )
    return finish(fig)


@styled
def dropoff_png(
    minutes: np.ndarray,
    day_share: np.ndarray,
    reference_share: np.ndarray,
    n_day: int,
    n_reference: int,
    reference_label: str,
    gap_minutes: int,
    subtitle: str,
) -> bytes:
    """Share of work sessions still going after m minutes: the day against the reference period."""
    fig, axes = new_figure("Drop-off: work sessions still going", subtitle, width=6.0)
    ax = axes[0, 0]
    if n_day == 0 and n_reference == 0:
        empty_panel(ax, "no work sessions")
        return finish(fig)
    if n_reference:
        ax.step(minutes, reference_share, where="post", color=REFERENCE, linewidth=2, label=f"{reference_label}")
    if n_day:
        ax.step(minutes, day_share, where="post", color=DAY, linewidth=2, label=f"this day ({n_day:,} sessions)")
    ax.set(
        xlabel="minutes since the session's first classification",
        ylabel="share of sessions still going",
        ylim=(0, 1.02),
        xlim=(0, float(np.max(minutes))),
        title=f"sessions end after a gap of {gap_minutes} min or more",
    )
    ax.legend(loc="upper right")
    return finish(fig)


@styled
def realized_quality_png(
    horizons: list[int],
    calibration: dict[int, tuple[np.ndarray, np.ndarray]],
    realized: dict[int, tuple[float, float, float]],
    test: dict[int, tuple[float, float, float]],
    subtitle: str,
) -> bytes:
    """ROC-AUC of the day's predictions (with its interval) against the model's test interval, and calibration.

    `calibration` maps a horizon to (mean prediction, observed share that
    continued) per octile of the prediction (checks.calibration_points);
    `realized` and `test` map a horizon to (estimate, low, high).
    """
    fig, axes = new_figure("Realized quality: did the predictions come true?", subtitle, ncols=2, width=4.8)
    left, right = axes[0]
    x = np.arange(len(horizons))
    for i, w in enumerate(horizons):
        estimate, low, high = test.get(w, (np.nan, np.nan, np.nan))
        if np.isfinite(low) and np.isfinite(high):
            left.fill_between([i - 0.35, i + 0.35], low, high, color=REFERENCE, alpha=0.35, linewidth=0)
        if np.isfinite(estimate):
            left.hlines(estimate, i - 0.35, i + 0.35, color=REFERENCE, linewidth=2, label="test" if i == 0 else None)
        estimate, low, high = realized.get(w, (np.nan, np.nan, np.nan))
        if np.isfinite(estimate):
            below = np.isfinite(high) and np.isfinite(test.get(w, (np.nan,) * 3)[1]) and high < test[w][1]
            colour = ALARM if below else DAY
            error = [[estimate - low], [high - estimate]] if np.isfinite(low) else None
            left.errorbar(
                i, estimate, yerr=error, fmt="o", color=colour, capsize=4, label="this day" if i == 0 else None
            )
    left.axhline(0.5, color=MUTED, linestyle=":", linewidth=1)
    left.set_xticks(x, [f"{w} min" for w in horizons])
    left.set(ylabel="ROC-AUC", title="ROC-AUC, 95% intervals", ylim=(0.3, 1.0))
    if left.get_legend_handles_labels()[0]:
        left.legend(loc="lower right")

    right.plot([0, 1], [0, 1], color=MUTED, linestyle=":", linewidth=1)
    drew = False
    for w in horizons:
        if w not in calibration:
            continue
        predicted, observed = calibration[w]
        right.plot(predicted, observed, marker="o", markersize=4, label=f"{w} min")
        drew = True
    right.set(
        xlabel="mean predicted P(continue)",
        ylabel="observed share that continued",
        title="calibration (octiles of the prediction)",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    if drew:
        right.legend(loc="upper left")
    else:
        empty_panel(right, "too few known outcomes")
    return finish(fig)


@styled
def drift_png(
    names: list[str],
    psi: np.ndarray,
    limit: np.ndarray,
    judged: np.ndarray,
    threshold: float,
    subtitle: str,
    details: list[tuple[str, np.ndarray, np.ndarray]] = (),
) -> bytes:
    """PSI of every model input (highest first) with its limit; then reference vs day shares of the top inputs.

    `details` holds (name, reference shares, day shares) per bin for a few inputs.
    """
    n = len(names)
    ncols = 1 + min(len(details), 3)
    fig, axes = new_figure(
        "Drift: today's inputs against the training reference", subtitle, ncols=ncols, width=4.2,
        height=max(3.6, 0.22 * n + 1.2),
    )  # fmt: skip
    ax = axes[0, 0]
    if n == 0:
        empty_panel(ax, "no inputs")
        return finish(fig)
    order = np.arange(n)[::-1]
    psi, limit, judged = np.asarray(psi, float), np.asarray(limit, float), np.asarray(judged, bool)
    colours = np.where(~judged, MUTED, np.where(psi > limit, ALARM, DAY))
    ax.barh(np.arange(n), psi[order], color=colours[order])
    ax.scatter(np.where(judged, limit, np.nan)[order], np.arange(n), marker="|", s=120, color="black", zorder=3)
    ax.axvline(threshold, color=ALARM, linestyle=":", linewidth=1)
    ax.set_yticks(np.arange(n), [names[i] + ("" if judged[i] else " (not judged)") for i in order], fontsize=7)
    ax.set(xlabel=f"PSI  (| = limit; dotted = {threshold})", title="population stability index")
    ax.grid(axis="y", visible=False)
    for panel, (name, reference_shares, day_shares) in zip(axes[0, 1:], details[:3]):
        bins = np.arange(len(reference_shares))
        panel.bar(bins - 0.2, reference_shares, width=0.4, color=REFERENCE, label="training reference")
        panel.bar(bins + 0.2, day_shares, width=0.4, color=DAY, label="this day")
        labels = [f"q{i + 1}" for i in range(len(bins) - 1)] + ["NaN"]
        panel.set_xticks(bins, labels, fontsize=7)
        panel.set(title=name, xlabel="reference quantile bin", ylabel="share of classifications")
        panel.legend(loc="upper left")
    return finish(fig)


# --------------------------------------------------------------------------- evaluation curves

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


@styled
def curves_png(
    kind: str, predictions: dict[str, np.ndarray], y: np.ndarray, horizons: list[int], label: PlotLabel
) -> bytes:
    """ROC ('roc'), precision-recall ('pr') or reliability ('calibration') curves, one panel per horizon."""
    if kind not in KINDS:
        raise ValueError(f"unknown plot kind {kind!r}: one of {KINDS}")
    plt = pyplot()
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
