-- Drop-off: the share of work sessions still going m minutes after their
-- first classification, for the sessions that started on the report's day
-- and for those of a reference period (the champion's training period).
-- Sessions are the label rule's (sql/marts/sessions.sql) for one horizon's
-- gap. A session still open at the end of the data counts at its length so
-- far: on the day itself that is the only censoring, and it is rare once
-- the day is over.
-- Variables (SET VARIABLE by report.py), all prefixed `dropoff_`: horizon,
-- day_start, day_end, reference_start, reference_end, max_minutes, step_minutes.

with params as (
    select
        getvariable('dropoff_horizon')::integer as horizon,
        getvariable('dropoff_day_start')::timestamptz as day_start,
        getvariable('dropoff_day_end')::timestamptz as day_end,
        getvariable('dropoff_reference_start')::timestamptz as reference_start,
        getvariable('dropoff_reference_end')::timestamptz as reference_end,
        getvariable('dropoff_max_minutes')::integer as max_minutes,
        getvariable('dropoff_step_minutes')::integer as step_minutes
),

sessions_of_interest as (
    select
        sessions.duration_minutes,
        sessions.session_start >= params.day_start and sessions.session_start < params.day_end as on_day,
        sessions.session_start >= params.reference_start
        and sessions.session_start < params.reference_end as in_reference
    from sessions
    cross join params
    where sessions.horizon_minutes = params.horizon
),

minutes as (
    select unnest(range(0, params.max_minutes + 1, params.step_minutes)) as minutes
    from params
)

select
    minutes.minutes,
    count(*) filter (where sessions_of_interest.on_day) as day_sessions,
    coalesce(
        avg((sessions_of_interest.duration_minutes >= minutes.minutes)::double)
        filter (where sessions_of_interest.on_day),
        0
    ) as day_share,
    count(*) filter (where sessions_of_interest.in_reference) as reference_sessions,
    coalesce(
        avg((sessions_of_interest.duration_minutes >= minutes.minutes)::double)
        filter (where sessions_of_interest.in_reference),
        0
    ) as reference_share
from minutes
cross join sessions_of_interest
where sessions_of_interest.on_day or sessions_of_interest.in_reference
group by minutes.minutes
order by minutes.minutes
