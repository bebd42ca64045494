"""What the `engagement` command checks before and after a run: the exports folder given, the days to score, the champion.

Each refusal is a CommandFailed with its exit code (console.EXIT_CODES) and one message.
"""

import datetime as dt
from pathlib import Path

from engagement_pipeline.cli.console import EXPORTS_PROBLEM, NOTHING_TO_SCORE, CommandFailed
from engagement_pipeline.settings import Settings


def latest_complete_days(settings: Settings, days: int) -> list[str]:
    """The last `days` UTC days that have classifications and are complete (valid partitions), oldest first."""
    import duckdb

    from engagement_pipeline.partitions import daily_partitions
    from engagement_pipeline.resources import resources_for

    with resources_for(settings)["warehouse"].connect() as con:
        try:
            rows = con.execute(
                "select distinct cast(created_at as date)::varchar as day from classifications order by day desc"
            ).fetchall()
        except duckdb.CatalogException:  # nothing ingested yet
            rows = []
    complete = [day for (day,) in rows if daily_partitions.has_partition_key(day)]  # today is not a partition yet
    return sorted(complete[:days])


def check_exports_option(folder: Path) -> None:
    """`--exports DIR` names a folder with exports in it: else CommandFailed(EXPORTS_PROBLEM) naming the option."""
    from engagement_pipeline.ingest.files import find_exports

    if not folder.exists():
        raise CommandFailed(EXPORTS_PROBLEM, f"--exports {folder}: no such folder.")
    if not folder.is_dir():
        raise CommandFailed(EXPORTS_PROBLEM, f"--exports {folder}: not a folder (give the folder the exports are in).")
    if not find_exports(folder):
        raise CommandFailed(
            EXPORTS_PROBLEM,
            f"--exports {folder}: no *.csv or *.csv.gz file in it or its sub-folders. Put the classification "
            "exports of the project builder's Data Exports page there.",
        )


def not_promoted_lines(settings: Settings, model_metadata: dict | None) -> list[str] | None:
    """Two lines when no version is champion after training (nothing can be scored), else None."""
    from engagement_pipeline.model.registry import NoChampionError, find_champion
    from engagement_pipeline.resources import resources_for

    try:
        find_champion(resources_for(settings)["tracking"])
        return None
    except NoChampionError:
        pass
    metadata = model_metadata or {}
    decision = str(getattr(metadata.get("champion_decision"), "value", metadata.get("champion_decision", "")))
    reason = decision.removesuffix(": not promoted, no champion yet").removeprefix("new ") or "see MLflow"
    version = getattr(metadata.get("registered_version"), "value", metadata.get("registered_version", "?"))
    return [
        f"Model version {version} was trained and registered but not promoted: {reason}.",
        "Nothing was scored: scoring needs a promoted model (the champion). Add exports with more volunteers or "
        "more days and run again; `engagement mlflow-ui` shows this run's figures.",
    ]


def data_span(settings: Settings) -> tuple[dt.date, dt.date] | None:
    """The first and last UTC day with classifications in the warehouse, or None when nothing was ingested."""
    import duckdb

    from engagement_pipeline.resources import resources_for

    warehouse = resources_for(settings)["warehouse"]
    if not warehouse.path.exists():
        return None
    with warehouse.connect() as con:
        try:
            first, last = con.execute(
                "select min(created_at)::date, max(created_at)::date from classifications"
            ).fetchone()
        except duckdb.CatalogException:  # nothing ingested yet
            return None
    return (first, last) if first is not None else None


def scorable_days(settings: Settings, days: list[dt.date]) -> list[dt.date]:
    """`days`, or the last complete day with classifications; CommandFailed naming the problem when there is none.

    Days outside the data are refused (NOTHING_TO_SCORE): a file of "0 users scored" helps no one. A range
    that overlaps the data is cut to it, saying so.
    """
    from engagement_pipeline.partitions import daily_partitions

    if not days:
        latest = latest_complete_days(settings, 1)
        if not latest:
            raise CommandFailed(
                NOTHING_TO_SCORE,
                f"No complete UTC day with classifications in {settings.home / 'warehouse.duckdb'} yet: run "
                "`engagement run --exports DIR` (or `engagement demo`) first, or name a day with --date D.",
            )
        days = [dt.date.fromisoformat(latest[0])]
    outside = [day for day in days if not daily_partitions.has_partition_key(day.isoformat())]
    if outside:
        keys = daily_partitions.get_partition_keys()
        span = f"from {keys[0]} to {keys[-1]}" if keys else "none yet"
        raise CommandFailed(
            NOTHING_TO_SCORE,
            f"{outside[0]} cannot be scored: the daily partitions run {span} (UTC days; today is not complete "
            "yet, and ENGAGEMENT_PARTITIONS_START sets the first day).",
        )
    span = data_span(settings)
    if span is None:
        raise CommandFailed(
            NOTHING_TO_SCORE,
            f"Nothing is ingested in {settings.home} yet: run `engagement run --exports DIR` (or `engagement demo`).",
        )
    inside = [day for day in days if span[0] <= day <= span[1]]
    if not inside:
        when = "after the data ends" if days[0] > span[1] else "before the data begins"
        asked = str(days[0]) if len(days) == 1 else f"{days[0]} to {days[-1]}"
        raise CommandFailed(
            NOTHING_TO_SCORE,
            f"Nothing to score on {asked}: it is {when} (the classifications run from {span[0]} to {span[1]}).",
        )
    if len(inside) < len(days):
        print(f"Scoring {inside[0]} to {inside[-1]} only: the classifications run from {span[0]} to {span[1]}.")
    return inside
