-- Work sessions under the label rules: one row per user, horizon and session.
-- A user's classifications, in (created_at, classification_id) order, break
-- into a new session wherever the gap since the previous one is the session
-- gap or more (CONTRACT.md, "Sessions and labels"). The gap is the horizon
-- itself, unless run config `session_gap_minutes` fixes one gap for all
-- horizons (Mao, Kamar and Horvitz 2013).
-- The run config (SessionRules, on this asset only) arrives as the DuckDB
-- variables `horizons` (INTEGER[]) and `session_gap_minutes` (INTEGER or
-- NULL); `labels` reads the rules back from this table, so they are set once.
-- Only session starts are searched for; a session ends at the classification
-- just before the next start (or at the user's last), so no extra sort of
-- every classification per horizon is needed.

with label_rules as (
    select
        horizon_minutes,
        coalesce(getvariable('session_gap_minutes')::integer, horizon_minutes) as gap_minutes
    from (select unnest(getvariable('horizons')::integer[]) as horizon_minutes) as horizons
),

session_starts as (
    select
        timeline.user_number,
        rules.horizon_minutes,
        rules.gap_minutes,
        timeline.user_seq as first_user_seq,
        timeline.created_at as session_start,
        timeline.previous_created_at as previous_session_end
    from int_user_timeline as timeline
    cross join label_rules as rules
    where
        timeline.previous_created_at is null
        or timeline.seconds_since_previous >= rules.gap_minutes * 60
),

sessions_ended_by_the_next_start as (
    select
        *,
        row_number() over user_sessions as session_number,
        lead(first_user_seq) over user_sessions - 1 as last_user_seq_before_next_start,
        lead(previous_session_end) over user_sessions as end_before_next_start
    from session_starts
    window user_sessions as (partition by user_number, horizon_minutes order by first_user_seq)
),

users_last_classification as (
    select
        user_number,
        max(user_seq) as last_user_seq,
        max(created_at) as last_created_at
    from int_user_timeline
    group by user_number
),

sessions_with_ends as (
    select
        volunteer.user_key,
        sessions.user_number,
        sessions.horizon_minutes,
        sessions.gap_minutes,
        sessions.session_number,
        sessions.session_start,
        coalesce(sessions.end_before_next_start, users_last.last_created_at) as session_end,
        sessions.first_user_seq,
        coalesce(sessions.last_user_seq_before_next_start, users_last.last_user_seq) as last_user_seq
    from sessions_ended_by_the_next_start as sessions
    join users_last_classification as users_last using (user_number)
    join stg_users as volunteer using (user_number)
)

select
    *,
    last_user_seq - first_user_seq + 1 as n_classifications,
    (epoch_us(session_end) - epoch_us(session_start)) / 60e6 as duration_minutes
from sessions_with_ends
