-- Whether a volunteer is still working W minutes after each classification:
-- one row per (classification_id, horizon_minutes) whose outcome is known.
-- The rule (CONTRACT.md, "Sessions and labels"): for a classification at t in
-- a session (under that horizon's gap) whose last classification is at e,
--   continues = true   when e - t >= W,
--   continues = false  when e - t <  W and data_end - e >= W,
--   otherwise the outcome is not yet known (censored): no row.
-- data_end is the latest created_at of all classifications. Horizons and gaps
-- come from `sessions`, where the run config sets them.

with label_rules as (
    select distinct horizon_minutes from sessions
),

data_end as (
    select max(created_at) as data_end from int_user_timeline
),

classifications_in_their_sessions as (
    -- a classification belongs to the last session of its user (under the
    -- horizon's rule) that started at or before it
    select
        timeline.classification_id,
        rules.horizon_minutes,
        timeline.created_at,
        sessions.session_end
    from int_user_timeline as timeline
    cross join label_rules as rules
    asof join sessions
        on timeline.user_number = sessions.user_number
        and rules.horizon_minutes = sessions.horizon_minutes
        and timeline.user_seq >= sessions.first_user_seq
),

outcomes as (
    -- on epoch microseconds: exact, and far cheaper than TIMESTAMPTZ intervals
    select
        classified.classification_id,
        classified.horizon_minutes,
        case
            when epoch_us(classified.session_end) - epoch_us(classified.created_at) >= classified.horizon_minutes * 60e6 then true
            when epoch_us(latest.data_end) - epoch_us(classified.session_end) >= classified.horizon_minutes * 60e6 then false
        end as continues
    from classifications_in_their_sessions as classified
    cross join data_end as latest
)

select
    classification_id,
    horizon_minutes,
    continues
from outcomes
where continues is not null
