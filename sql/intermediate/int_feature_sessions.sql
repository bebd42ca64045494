-- The users' 30-minute work sessions (the feature gap of int_user_timeline):
-- one row per user and session, with how it began and what the user had done
-- BEFORE it.
-- Every column is known when the session's first classification is made:
-- its start, and previous_*, *_before and usual_* columns computed from
-- sessions that ended before this one began (window frames end at 1
-- PRECEDING), so features may join them to any classification of the
-- session. The session's own totals are the future of its early
-- classifications: they stay in the first CTEs and are never selected.

with sessions_30m as (
    select
        user_number,
        feature_session_number,
        min(created_at) as session_start,
        max(created_at) as session_end,
        min(user_seq) as first_user_seq,
        min(short_breaks_so_far) as short_breaks_before,  -- the running count at its first row, never itself a short break
        count(*) as n_classifications
    from int_user_timeline
    group by user_number, feature_session_number
),

sessions_with_gap_since_previous as (
    select
        *,
        (epoch_us(session_end) - epoch_us(session_start)) / 60e6 as duration_minutes,
        (epoch_us(session_start) - epoch_us(lag(session_end) over user_sessions)) / 3600e6 as hours_since_previous_session
    from sessions_30m
    window user_sessions as (partition by user_number order by feature_session_number)
)

select
    user_number,
    feature_session_number,
    session_start,
    first_user_seq,
    short_breaks_before,
    lag(n_classifications) over user_sessions as previous_session_classifications,
    lag(duration_minutes) over user_sessions as previous_session_minutes,
    avg(n_classifications) over last_10_sessions_before as mean_classifications_last_10_sessions,
    avg(duration_minutes) over last_10_sessions_before as mean_minutes_last_10_sessions,
    coalesce(sum(duration_minutes) over all_sessions_before, 0) as active_minutes_before,
    hours_since_previous_session,
    avg(hours_since_previous_session) over all_sessions_before as usual_hours_between_sessions
from sessions_with_gap_since_previous
window
    user_sessions as (partition by user_number order by feature_session_number),
    last_10_sessions_before as (user_sessions rows between 10 preceding and 1 preceding),
    all_sessions_before as (user_sessions rows between unbounded preceding and 1 preceding)
