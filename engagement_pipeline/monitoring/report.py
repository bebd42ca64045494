"""The morning report: one self-contained HTML page per scored day, and the same plots in Dagster.

`engagement_report` (daily partitions, after `user_predictions`) writes
`<home>/reports/date=YYYY-MM-DD/report.html`, with four sections:

* who to reach: the day's volunteers most at risk of stopping (lowest
  P(continue) at their last classification), by user_key, with their last
  activity and their work session so far (sql/who_to_reach.sql);
* drop-off: the share of work sessions still going after m minutes, the day
  against the champion's training period (sql/dropoff.sql);
* realized quality: the champion's ROC-AUC and calibration on the latest day
  whose outcomes are all known, against its test interval (checks.py);
* drift: PSI of every model input on the day against the champion's
  reference (drift.py).

Plots are PNGs from plots.py, embedded as base64 (the page opens offline) and
shown as images in the asset's metadata, with numbers per partition
(`at_risk_users`, `realized_roc_auc_10m`, `max_psi`, ...) for the Plots tab.
The page is written beside its final place and renamed over it.
"""

import base64
import datetime as dt
import html
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import numpy as np
from pydantic import Field

from engagement_pipeline.model.registry import ChampionVersion, find_champion
from engagement_pipeline.model.windows import quote_identifier
from engagement_pipeline.monitoring.checks import (
    RealizedQuality,
    day_bounds,
    read_day_inputs,
    realized_markdown,
    realized_quality,
)
from engagement_pipeline.monitoring.drift import (
    PSI_THRESHOLD,
    DriftResult,
    NoDriftReferenceError,
    load_drift_reference,
    matrix_drift,
)
from engagement_pipeline.ops.atomic_files import remove_leftovers, replacing
from engagement_pipeline.partitions import daily_partitions
from engagement_pipeline.resources import Storage, Tracking, Warehouse

SQL = Path(__file__).with_name("sql")
REPORT_NAME = "report.html"


class ReportConfig(dg.Config):
    listed: int = Field(25, description="Volunteers listed under 'who to reach' (the most at risk first).")
    at_risk_below: float = Field(
        0.5, description="A volunteer counts as at risk (`at_risk_users`) when P(continue) at the shortest horizon "
        "is below this.",
    )  # fmt: skip
    dropoff_max_minutes: int = Field(120, description="Drop-off curve: up to this many minutes into a session.")
    reference_days: int = Field(
        28, description="Drop-off reference when the champion records no training period: this many days before."
    )


def report_path(reports: Path, day: str) -> Path:
    return reports / f"date={day}" / REPORT_NAME


def predictions_file(predictions: Path, day: str) -> Path:
    return predictions / f"date={day}" / "predictions.parquet"


def write_text_atomically(text: str, target: Path) -> None:
    """Write beside `target`, fsync, rename over it: a reader sees the old page or the new one."""
    with replacing(target, "report") as temporary:
        temporary.write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------- the data


@dataclass
class Dropoff:
    minutes: np.ndarray
    day_share: np.ndarray
    reference_share: np.ndarray
    day_sessions: int
    reference_sessions: int
    reference_label: str
    gap_minutes: int


def set_variables(con, prefix: str, values: dict) -> None:
    """SET VARIABLE <prefix><name> for each value: the parameters of a sql/ query."""
    for name, value in values.items():
        con.execute(f"set variable {prefix}{name} = ?", [value])


def who_to_reach(con, predictions: Path, horizon: int, listed: int):
    """The `listed` volunteers of the day's file with the lowest P(continue) at `horizon`, as a pyarrow Table."""
    column = quote_identifier(f"p_continue_{horizon}m")
    con.read_parquet(str(predictions)).project(f"*, {column} as p_continue").create_view("day_predictions")
    set_variables(con, "report_", {"listed": listed})
    try:
        return con.sql((SQL / "who_to_reach.sql").read_text()).to_arrow_table()
    finally:
        con.execute("drop view day_predictions")


def read_dropoff(con, day: dt.date, horizon: int, reference_us: tuple[int, int] | None, config: ReportConfig):
    start, end = day_bounds(day)
    if reference_us is not None:
        reference = tuple(dt.datetime.fromtimestamp(us / 1e6, dt.UTC) for us in reference_us)
        label = f"training period {reference[0]:%Y-%m-%d} to {reference[1]:%Y-%m-%d}"
    else:
        reference = (start - dt.timedelta(days=config.reference_days), start)
        label = f"the {config.reference_days} days before"
    variables = {
        "horizon": horizon,
        "day_start": start,
        "day_end": end,
        "reference_start": reference[0],
        "reference_end": reference[1],
        "max_minutes": config.dropoff_max_minutes,
        "step_minutes": 1,
    }
    set_variables(con, "dropoff_", variables)
    table = con.execute((SQL / "dropoff.sql").read_text()).fetchnumpy()
    gap = con.execute("select any_value(gap_minutes) from sessions where horizon_minutes = ?", [horizon]).fetchone()[0]
    minutes = np.arange(0, config.dropoff_max_minutes + 1)
    found = len(table["minutes"]) > 0
    reference_sessions = int(table["reference_sessions"][0]) if found else 0
    return Dropoff(
        minutes=np.asarray(table["minutes"]) if found else minutes,
        day_share=np.asarray(table["day_share"], dtype=np.float64) if found else np.zeros(len(minutes)),
        reference_share=np.asarray(table["reference_share"], dtype=np.float64) if found else np.zeros(len(minutes)),
        day_sessions=int(table["day_sessions"][0]) if found else 0,
        reference_sessions=reference_sessions,
        reference_label=f"{label} ({reference_sessions:,} sessions)",
        gap_minutes=int(gap if gap is not None else horizon),
    )


def share_still_going(dropoff: Dropoff, minutes: int, which: str = "day") -> float:
    at = np.searchsorted(dropoff.minutes, minutes)
    shares = dropoff.day_share if which == "day" else dropoff.reference_share
    return float(shares[at]) if at < len(shares) else float("nan")


# --------------------------------------------------------------------------- the page


def png_tag(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def table_html(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


PAGE_STYLE = """
body { font-family: 'DejaVu Sans', Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
h1 { margin-bottom: 0.1em; } .stamp { color: #555; margin-top: 0; }
section { margin: 2em 0; } img { max-width: 100%; border: 1px solid #eee; }
table { border-collapse: collapse; font-size: 0.9em; } th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #ddd; }
th { text-align: left; background: #f4f4f4; } .warn { color: #c0392b; font-weight: bold; } .ok { color: #1f5fa8; }
.numbers span { display: inline-block; margin-right: 2em; } .numbers b { font-size: 1.3em; }
"""


def render_html(
    day: str,
    model: str,
    numbers: dict[str, str],
    at_risk_rows: list[list[str]],
    plots: dict[str, bytes],
    notes: dict[str, str],
    realized: RealizedQuality,
    drift: DriftResult | None,
) -> str:
    """The whole page: inline CSS, images as data URIs, nothing fetched from anywhere."""
    number_html = "".join(f"<span>{html.escape(k)}<br><b>{html.escape(v)}</b></span>" for k, v in numbers.items())
    at_risk = table_html(
        ["user_key", "P(continue)", "last classification (UTC)", "classifications that day",
         "session so far: classifications", "session so far: minutes"],
        at_risk_rows,
    ) if at_risk_rows else "<p>No volunteer was active this day.</p>"  # fmt: skip
    realized_rows = [
        [f"{w} min"]
        + [f"{v:.3f}" for v in realized.realized.get(w, (np.nan,) * 3)]
        + [f"{v:.3f}" for v in realized.test.get(w, (np.nan,) * 3)]
        + [f"{realized.known_outcomes.get(w, 0):,}"]
        for w in realized.horizons
    ]
    drift_rows = [
        [
            d.name,
            f"{d.psi:.3f}",
            f"{d.limit:.3f}",
            "DRIFTED" if d.drifted else ("yes" if d.judged else d.why_not_judged),
        ]
        for d in (drift.inputs if drift is not None else [])
    ]

    def section(key: str, title: str, body: str) -> str:
        image = png_tag(plots[key], title) if key in plots else ""
        note = f"<p>{html.escape(notes[key])}</p>" if notes.get(key) else ""
        return f'<section id="{key}"><h2>{html.escape(title)}</h2>{note}{image}{body}</section>'

    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Engagement report {html.escape(day)}</title>
<style>{PAGE_STYLE}</style></head><body>
<h1>Engagement report for {html.escape(day)}</h1>
<p class="stamp">{html.escape(model)} · day {html.escape(day)} (UTC) ·
generated {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC</p>
<div class="numbers">{number_html}</div>
{section("who_to_reach", "Who to reach", at_risk)}
{section("dropoff", "Drop-off", "")}
{
        section(
            "realized_quality",
            "Realized quality",
            table_html(
                ["horizon", "realized ROC-AUC", "low", "high", "test ROC-AUC", "low", "high", "known outcomes"],
                realized_rows,
            ),
        )
    }
{section("drift", "Drift", table_html(["input", "PSI", "limit", "judged"], drift_rows) if drift_rows else "")}
</body></html>
"""


# --------------------------------------------------------------------------- the asset


def at_risk_table_rows(table, horizon_column: str = "p_continue") -> list[list[str]]:
    columns = table.to_pydict()
    rows = []
    for i in range(table.num_rows):
        minutes = columns["session_minutes_so_far"][i]
        count = columns["session_classifications_so_far"][i]
        rows.append(
            [
                str(columns["user_key"][i]),
                f"{columns[horizon_column][i]:.3f}",
                f"{columns['last_classification_at'][i]:%Y-%m-%d %H:%M:%S}",
                str(columns["n_classifications"][i]),
                "-" if count is None else str(count),
                "-" if minutes is None else f"{minutes:.1f}",
            ]
        )
    return rows


def build_report(
    day: str,
    version: ChampionVersion,
    warehouse: Warehouse,
    tracking: Tracking,
    predictions: Path,
    config: ReportConfig,
    log=None,
) -> tuple[str, dict, dict[str, bytes]]:
    """(page HTML, numeric metadata, plots) of one day."""
    import pyarrow.parquet as pq

    from engagement_pipeline.monitoring import plots

    date = dt.date.fromisoformat(day)
    model = f"{version.name} v{version.version}"
    subtitle = plots.stamp(version.name, version.version, day)
    horizon = version.horizons[0]
    file = predictions_file(predictions, day)
    if not file.exists():
        raise FileNotFoundError(f"{file} does not exist: materialize `user_predictions` for {day} first")
    day_p = pq.read_table(file, columns=[f"p_continue_{horizon}m"]).column(0).to_numpy()
    try:
        reference = load_drift_reference(tracking.client(), version.name, version.version)
        reference_note = ""
    except NoDriftReferenceError as error:
        reference, reference_note = None, str(error)

    with warehouse.connect(log=log) as con:
        at_risk = who_to_reach(con, file, horizon, config.listed)
        dropoff = read_dropoff(con, date, max(version.horizons), (reference or {}).get("train_period_us"), config)
        day_matrix = read_day_inputs(con, date)
    drift = matrix_drift(reference, day_matrix) if reference is not None else None
    realized = realized_quality(lambda: warehouse.connect(log=log), tracking, date, log)

    figures = {
        "who_to_reach": plots.at_risk_png(day_p, horizon, min(config.listed, len(day_p)), subtitle),
        "dropoff": plots.dropoff_png(
            dropoff.minutes, dropoff.day_share, dropoff.reference_share, dropoff.day_sessions,
            dropoff.reference_sessions, dropoff.reference_label, dropoff.gap_minutes, subtitle,
        ),
        "realized_quality": plots.realized_quality_png(
            realized.horizons, realized.y, realized.p, realized.realized, realized.test,
            plots.stamp(version.name, version.version, f"outcomes of {realized.day}" if realized.day else day),
        ),
    }  # fmt: skip
    if drift is not None:
        top = [d for d in drift.inputs if d.judged][:3]
        figures["drift"] = plots.drift_png(
            [d.name for d in drift.inputs], np.array([d.psi for d in drift.inputs]),
            np.array([d.limit for d in drift.inputs]), np.array([d.judged for d in drift.inputs]),
            PSI_THRESHOLD, subtitle, [(d.name, d.reference_shares, d.day_shares) for d in top],
        )  # fmt: skip

    at_risk_users = int(np.sum(day_p < config.at_risk_below))
    metadata: dict[str, float | int | str] = {
        "active_users": len(day_p),
        "at_risk_users": at_risk_users,
        f"mean_p_continue_{horizon}m": float(day_p.mean()) if len(day_p) else float("nan"),
        "sessions_started": dropoff.day_sessions,
        "share_of_sessions_past_10_min": share_still_going(dropoff, 10),
        "share_of_sessions_past_30_min": share_still_going(dropoff, 30),
        "max_psi": drift.max_psi if drift is not None else float("nan"),
        "drifted_inputs": len(drift.offending) if drift is not None else 0,
        "realized_day": str(realized.day) if realized.day else "none yet",
    }
    for w in realized.horizons:
        metadata[f"realized_roc_auc_{w}m"] = realized.realized.get(w, (float("nan"),))[0]
    for w, brier in realized.brier.items():
        metadata[f"realized_brier_{w}m"] = brier

    notes = {
        "who_to_reach": f"The {min(config.listed, len(day_p))} volunteers active on {day} with the lowest "
        f"P(still working {horizon} min after their last classification), of {len(day_p):,}. "
        f"{at_risk_users:,} of them are below {config.at_risk_below}.",
        "dropoff": f"Sessions under the {dropoff.gap_minutes}-minute gap rule that started on {day}, against "
        f"{dropoff.reference_label}.",
        "realized_quality": (
            realized.note
            or f"Every classification of {realized.day} (the latest day whose outcomes are all known), scored by "
            f"{realized.model}, against its test interval ({realized.test_interval_source})."
        ),
        "drift": reference_note
        or (
            f"{drift.n_rows:,} classifications by {drift.n_volunteer_days:,} volunteers on {day}. An input "
            f"drifted when its PSI exceeds {PSI_THRESHOLD} and the noise floor of the day's effective sample size "
            f"(the limit); {len(drift.offending)} did."
        ),
    }
    numbers = {
        "active volunteers": f"{len(day_p):,}",
        "at risk": f"{at_risk_users:,}",
        f"realized ROC-AUC {horizon} min": f"{metadata[f'realized_roc_auc_{horizon}m']:.3f}",
        "max PSI": f"{metadata['max_psi']:.2f}",
        "inputs drifted": str(metadata["drifted_inputs"]),
    }
    page = render_html(day, model, numbers, at_risk_table_rows(at_risk), figures, notes, realized, drift)
    metadata["realized_quality"] = dg.MetadataValue.md(realized_markdown(realized))
    return page, metadata, figures


@dg.asset(
    partitions_def=daily_partitions,
    deps=[dg.AssetKey("user_predictions")],
    group_name="scoring",
    kinds={"html"},
    owners=["team:engagement"],
    description=(
        "The morning report of one UTC day: who to reach (the volunteers most at risk), drop-off of work "
        "sessions against the training period, realized quality of the champion on the latest day whose outcomes "
        "are known, and input drift. $ENGAGEMENT_HOME/reports/date=YYYY-MM-DD/report.html (self-contained)."
    ),
)
def engagement_report(
    context: dg.AssetExecutionContext,
    config: ReportConfig,
    warehouse: Warehouse,
    tracking: Tracking,
    storage: Storage,
) -> dg.MaterializeResult:
    from engagement_pipeline.monitoring.plots import png_markdown

    day = context.partition_key
    version = find_champion(tracking)
    page, metadata, figures = build_report(
        day, version, warehouse, tracking, storage.predictions, config, log=context.log
    )
    target = report_path(storage.reports, day)
    remove_leftovers(storage.reports.glob("date=*"), target.name)  # a killed run's page, of any day
    write_text_atomically(page, target)
    context.log.info(f"report for {day} -> {target}")
    images = {f"plot_{name}": dg.MetadataValue.md(png_markdown(name, png)) for name, png in figures.items()}
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(target)),
            "model": f"{version.name} v{version.version}",
            **{k: dg.MetadataValue.float(float(v)) if isinstance(v, float) else v for k, v in metadata.items()},
            **images,
        }
    )
