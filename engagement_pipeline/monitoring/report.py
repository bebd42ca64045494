"""The morning report: one self-contained HTML page per scored day, and the same plots in Dagster.

`engagement_report` (daily partitions, after `user_predictions`) writes
`<home>/reports/date=YYYY-MM-DD/report.html`, with four sections:

* who to reach: the day's volunteers most at risk of stopping (lowest
  P(continue) at their last classification), by user_key, with their last
  activity and their work session so far (sql/who_to_reach.sql);
* drop-off: the share of work sessions still going after m minutes, the day
  against the champion's training period (sql/dropoff.sql);
* realized quality: the ROC-AUC and calibration, on the latest day whose
  outcomes are all known, of the model version that scored the day, against
  its test interval;
* drift: PSI of every model input on the day against that version's
  reference (drift.py).

The last two are what the checks `realized_quality` and `feature_drift` on
`user_predictions` computed for this day and this model version, read from
the warehouse where they stored them (results.py); the report computes
neither again, so it shows exactly what the checks reported. The checks are
blocking, so Dagster runs them before this asset whenever both are in a run
(the nightly `nightly_score_and_report`, `engagement run` and `engagement
score`, or selecting both in the UI). A report materialized on its own for a
day whose checks never ran for that version says so in place of those
figures, naming what to run; it does not compute them itself.

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

from engagement_pipeline.model.registry import ChampionVersion
from engagement_pipeline.model.windows import quote_identifier
from engagement_pipeline.monitoring.checks import (
    day_bounds,
    realized_markdown,
    require_tables,
    version_that_scored,
)
from engagement_pipeline.monitoring.drift import PSI_THRESHOLD, NoDriftReferenceError, load_drift_reference
from engagement_pipeline.monitoring.report_text import (
    DriftAwayRule,
    activity_sentence,
    contactable,
    details_html,
    drift_away_sentence,
    inputs_sentence,
    interval_text,
    quality_sentence,
    table_html,
)
from engagement_pipeline.monitoring.results import RealizedQuality, read_drift, read_realized
from engagement_pipeline.ops.atomic_files import remove_leftovers, replacing
from engagement_pipeline.partitions import daily_partitions
from engagement_pipeline.resources import Storage, Tracking, Warehouse
from engagement_pipeline.transform.sql_models import MissingUpstreamError

SQL = Path(__file__).with_name("sql")
REPORT_NAME = "report.html"
MAX_FLAGGED = 5_000  # volunteers read for the drift-away list (the day's file, most at risk first)


class ReportConfig(dg.Config):
    listed: int = Field(25, description="Volunteers listed under 'who to reach' (the most likely to drift away first).")
    at_risk_below: float = Field(
        0.5, description="A volunteer counts as at risk (`at_risk_users`) when P(continue) at the shortest horizon "
        "is below this.",
    )  # fmt: skip
    drift_away_quantile: float = Field(
        0.1, description="Likely to drift away: P(continue) at the shortest horizon at or below this quantile of the "
        "project's recent volunteer-days (drift_away_days).",
    )  # fmt: skip
    drift_away_days: int = Field(28, description="The recent days (the report's day included) that quantile spans.")
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


def drift_away_rule(con, predictions: Path, day: str, horizon: int, config: ReportConfig) -> DriftAwayRule:
    """The project's threshold for "likely to drift away" on `day` (sql/drift_away_threshold.sql)."""
    first = dt.date.fromisoformat(day) - dt.timedelta(days=config.drift_away_days - 1)
    variables = {
        "files": str(predictions / "date=*" / "predictions.parquet"),
        "column": f"p_continue_{horizon}m",
        "first_day": first,
        "last_day": dt.date.fromisoformat(day),
        "quantile": config.drift_away_quantile,
    }
    set_variables(con, "drift_away_", variables)
    [(threshold, volunteer_days, first_day)] = con.execute((SQL / "drift_away_threshold.sql").read_text()).fetchall()
    return DriftAwayRule(
        horizon, float(threshold) if threshold is not None else float("nan"), config.drift_away_quantile,
        int(volunteer_days), first_day or day, day,
    )  # fmt: skip


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


PAGE_STYLE = """
body { font-family: 'DejaVu Sans', Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
h1 { margin-bottom: 0.1em; } .stamp { color: #555; margin-top: 0; }
.lead { font-size: 1.15em; line-height: 1.5; background: #f6f8fb; border-left: 4px solid #1f5fa8; padding: 0.6em 1.2em; }
.lead li { margin: 0.35em 0; } .lead .warn { color: #c0392b; }
section { margin: 2em 0; } img { max-width: 100%; border: 1px solid #eee; }
table { border-collapse: collapse; font-size: 0.9em; } th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #ddd; }
th { text-align: left; background: #f4f4f4; } .note { color: #555; font-size: 0.9em; }
.numbers span { display: inline-block; margin-right: 2em; } .numbers b { font-size: 1.2em; }
"""


def render_html(
    day: str,
    model: str,
    lead: list[tuple[str, bool]],
    reach_rows: list[list[str]],
    horizon: int,
    plots: dict[str, bytes],
    notes: dict[str, str],
    details: dict,
) -> str:
    """The whole page: the lead sentences first, then who to reach, the plots, and the details; nothing fetched."""
    items = [f"<li{' class=warn' if warn else ''}>{html.escape(text)}</li>" for text, warn in lead]
    lead_html = "".join(items)
    reach = table_html(
        ["user_key", f"P(still working {horizon} min)", "last classification (UTC)", "classifications that day",
         "session so far: classifications", "session so far: minutes"],
        reach_rows,
    ) if reach_rows else ""  # fmt: skip

    def section(key: str, title: str, body: str = "") -> str:
        image = png_tag(plots[key], title) if key in plots else ""
        note = f"<p>{html.escape(notes[key])}</p>" if notes.get(key) else ""
        return f'<section id="{key}"><h2>{html.escape(title)}</h2>{note}{body}{image}</section>'

    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Engagement report {html.escape(day)}</title>
<style>{PAGE_STYLE}</style></head><body>
<h1>Engagement report for {html.escape(day)}</h1>
<p class="stamp">{html.escape(model)} · day {html.escape(day)} (UTC) ·
generated {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC</p>
<section id="summary" class="lead"><ul>{lead_html}</ul></section>
{section("who_to_reach", "Who to reach", reach)}
{section("dropoff", "How long sessions lasted")}
{section("realized_quality", "Did the model do as well as tested?")}
{section("drift", "Do the inputs look like the training data?")}
<section id="details"><h2>Details</h2>{details_html(details)}</section>
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

    def not_run(check: str) -> str:
        return (
            f"the `{check}` check has not run on the predictions of {day} by {model}: execute it (Dagster UI: "
            "`user_predictions`, Checks), then materialize this report again."
        )

    subtitle = plots.stamp(version.name, version.version, day)
    horizon = version.horizons[0]
    file = predictions_file(predictions, day)
    if not file.exists():
        raise MissingUpstreamError(f"{file} does not exist: materialize `user_predictions` for {day} first")
    day_p = pq.read_table(file, columns=[f"p_continue_{horizon}m"]).column(0).to_numpy()
    try:  # for the drop-off's training period
        reference = load_drift_reference(tracking.client(), version.name, version.version)
    except NoDriftReferenceError:
        reference = None

    with warehouse.connect(log=log) as con:
        require_tables(con, day)
        rule = drift_away_rule(con, predictions, day, horizon, config)
        at_risk = who_to_reach(con, file, horizon, MAX_FLAGGED)
        dropoff = read_dropoff(con, date, max(version.horizons), (reference or {}).get("train_period_us"), config)
        (classifications,) = con.execute(
            "select count(*) from features where created_at >= ? and created_at < ?", list(day_bounds(date))
        ).fetchone()
        drift, drift_note = read_drift(con, date, version.name, version.version) or (None, not_run("feature_drift"))
        realized = read_realized(con, date, version.name, version.version) or RealizedQuality(
            None, model, version.horizons, note=not_run("realized_quality").rstrip("."),
            test_interval_source="not known: the `realized_quality` check has not run",
        )  # fmt: skip

    figures = {
        "who_to_reach": plots.at_risk_png(day_p, horizon, min(config.listed, len(day_p)), subtitle, rule.threshold),
        "dropoff": plots.dropoff_png(
            dropoff.minutes, dropoff.day_share, dropoff.reference_share, dropoff.day_sessions,
            dropoff.reference_sessions, dropoff.reference_label, dropoff.gap_minutes, subtitle,
        ),
        "realized_quality": plots.realized_quality_png(
            realized.horizons, realized.calibration, realized.realized, realized.test,
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
    rows = at_risk_table_rows(at_risk)
    flagged = [row for row, p in zip(rows, at_risk.column("p_continue").to_numpy()) if p <= rule.threshold]
    reachable = contactable([row[0] for row in flagged])
    metadata: dict[str, float | int | str] = {
        "active_users": len(day_p),
        "likely_to_drift_away": len(flagged),
        "likely_to_drift_away_contactable": int(reachable.sum()),
        "drift_away_threshold": rule.threshold,
        "at_risk_users": at_risk_users,
        f"mean_p_continue_{horizon}m": float(day_p.mean()) if len(day_p) else float("nan"),
        "sessions_started": dropoff.day_sessions,
        "share_of_sessions_past_10_min": share_still_going(dropoff, 10),
        "share_of_sessions_past_30_min": share_still_going(dropoff, 30),
        "max_psi": drift.max_psi if drift is not None else float("nan"),
        "drifted_inputs": len(drift.offending) if drift is not None else 0,
        "realized_day": str(realized.day) if realized.day else "none yet",
        "model_worse_than_tested": len(realized.below_test),
    }
    for w in realized.horizons:
        metadata[f"realized_roc_auc_{w}m"] = realized.realized.get(w, (float("nan"),))[0]
    for w, brier in realized.brier.items():
        metadata[f"realized_brier_{w}m"] = brier

    worse = bool(realized.below_test)
    moved = drift is not None and bool(drift.offending)
    lead = [
        (activity_sentence(day, len(day_p), classifications), False),
        (drift_away_sentence(day, rule, len(flagged), int(reachable.sum())), False),
        (quality_sentence(realized), worse),
        (inputs_sentence(day, drift, drift_note), moved),
    ]
    reach_rows = [row for row, ok in zip(flagged, reachable) if ok][: config.listed]
    notes = {
        "who_to_reach": (
            f"The volunteers active on {day} who are most likely to drift away and can be contacted (a Zooniverse "
            f"user id), lowest probability first ({len(reach_rows)} of {int(reachable.sum())} shown)."
            if reach_rows
            else f"No volunteer likely to drift away on {day} can be contacted from this export."
        )
        + f" The histogram shows P(still working {horizon} min after their last classification) of all {len(day_p):,}.",
        "dropoff": f"The share of work sessions still going m minutes after they started: those that started on {day} "
        f"against {dropoff.reference_label} (a session ends after a {dropoff.gap_minutes}-minute pause).",
        "realized_quality": (
            realized.note
            or f"Every classification of {realized.day} (the latest day whose outcomes are all known), scored by "
            f"{realized.model}: how well it told apart those who stopped from those who went on (ROC-AUC: 0.5 is "
            "chance, 1 perfect), against the same measure when the model was tested."
        ),
        "drift": drift_note
        or (
            f"How far each input of {day}'s {drift.n_rows:,} classifications moved from the training data "
            f"(PSI); an input has moved when it passes its limit, which grows when the day has few volunteers."
        ),
    }
    extreme = any(
        np.isfinite(r[1]) and (r[1] < 0.05 or r[2] > 0.95)
        for r in [*realized.realized.values(), *realized.test.values()]
    )
    details = {
        "numbers": {
            "active volunteers": f"{len(day_p):,}",
            f"below {config.at_risk_below} (at_risk_users)": f"{at_risk_users:,}",
            "drift-away threshold": f"{rule.threshold:.3f}",
            f"realized ROC-AUC {horizon} min, outcomes of {realized.day or '-'}": interval_text(
                *realized.realized.get(horizon, (np.nan,) * 3)
            ),
            "max PSI": f"{metadata['max_psi']:.2f}",
            "inputs moved": str(metadata["drifted_inputs"]),
        },
        "realized": realized,
        "drift": drift,
        "hashed": [row[0] for row, ok in zip(flagged, reachable) if not ok],
        "quality_note": (
            "Intervals are 95% bootstrap intervals over volunteers. The test interval is "
            f"{realized.test_interval_source or 'not logged'}. The model did worse than tested at a horizon when "
            "the day's whole interval lies below the test interval."
            + (
                " An interval reaching 0.00 or 1.00 is not an error: with few volunteers, resampling them gives "
                "extreme values, and the day is too small to say much."
                if extreme
                else ""
            )
        ),
    }
    page = render_html(day, model, lead, reach_rows, horizon, figures, notes, details)
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
    version, version_note = version_that_scored(predictions_file(storage.predictions, day), tracking)
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
            "model": f"{version.name} v{version.version}{version_note}",
            **{k: dg.MetadataValue.float(float(v)) if isinstance(v, float) else v for k, v in metadata.items()},
            **images,
        }
    )
