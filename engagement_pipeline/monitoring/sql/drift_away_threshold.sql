-- Who is likely to drift away, relative to the project: the quantile of
-- P(continue) at the shortest horizon over every volunteer-day scored in the
-- days before the report's day and on it (the nightly predictions files).
-- A volunteer at or below it is flagged on the report's first screen.
-- Variables (SET VARIABLE by report.py), all prefixed `drift_away_`:
-- files (a glob of predictions.parquet files), column (the probability
-- column's name), first_day, last_day (dates, inclusive), quantile.

with scored as (
    select
        hive.date::date as scored_day,
        columns(getvariable('drift_away_column')) as p_continue
    from
        read_parquet(
            getvariable('drift_away_files'), hive_partitioning = true, union_by_name = true
        ) as hive
)

select
    quantile_cont(p_continue, getvariable('drift_away_quantile')) as threshold,
    count(*) as volunteer_days,
    min(scored_day)::varchar as first_day
from scored
where
    scored_day between getvariable('drift_away_first_day')::date
    and getvariable('drift_away_last_day')::date
    and p_continue is not null
