-- Model inputs: one row per classification, from that classification and the
-- same user's earlier ones only (nothing after created_at can leak in).
-- Columns: classification_id, user_key, created_at, then numeric features
-- only; training takes every column after the first three, in table order.
-- Sessions here use the fixed 30-minute feature gap of int_user_timeline, as
-- known at the moment: the current session so far, never its total.
-- Counts, times and durations are log-scaled (heavy tails). Trends compare
-- the latest gap with the mean of the session's last 10 gaps, and the task's
-- duration with the mean of the user's last 10 tasks: a volunteer slowing
-- down is about to leave. No sort here: everything that needs the user's
-- order was computed once, in int_user_timeline.
-- Features that may be NULL, and why (all others never are; the asset check
-- features_nulls_only_where_allowed holds the table to this line):
-- nullable: log_task_seconds, duration_trend, log_seconds_since_previous, log_mean_gap_last_10, gap_trend, log_previous_session_classifications, log_previous_session_minutes, log_mean_classifications_last_10_sessions, log_mean_minutes_last_10_sessions, log_hours_since_previous_session, session_gap_vs_usual
--   log_task_seconds, duration_trend: no usable browser clock for this classification;
--   log_seconds_since_previous: the user's first classification;
--   log_mean_gap_last_10, gap_trend: the first classification of a session;
--   log_previous_session_*, log_mean_*_last_10_sessions,
--   log_hours_since_previous_session: the user's first session;
--   session_gap_vs_usual: fewer than two earlier sessions (no usual gap yet).

with classifications_in_context as (
    select
        timeline.*,
        volunteer.user_key,
        -- the volunteer's wall clock (UTC when the offset is unknown), as a plain TIMESTAMP
        make_timestamp(epoch_us(timeline.created_at) + coalesce(timeline.utc_offset_minutes, 0)::bigint * 60000000)
            as local_time,
        timeline.user_seq - feature_session.first_user_seq + 1 as position_in_session,
        (epoch_us(timeline.created_at) - epoch_us(feature_session.session_start)) / 60e6 as session_minutes_so_far,
        timeline.short_breaks_so_far - feature_session.short_breaks_before as short_breaks_in_session,
        -- the gaps between the session's last (up to) 10 classifications add up to the
        -- time since the later of: the session's start, the classification 10 before
        case
            when position_in_session > 1
                then
                    (epoch_us(timeline.created_at) - epoch_us(greatest(timeline.created_at_10_before, feature_session.session_start)))
                    / 1e6 / least(10, position_in_session - 1)
        end as mean_gap_last_10,
        feature_session.previous_session_classifications,
        feature_session.previous_session_minutes,
        feature_session.mean_classifications_last_10_sessions,
        feature_session.mean_minutes_last_10_sessions,
        feature_session.active_minutes_before,
        feature_session.hours_since_previous_session,
        feature_session.usual_hours_between_sessions
    from int_user_timeline as timeline
    join int_feature_sessions as feature_session
        on timeline.user_number = feature_session.user_number
        and timeline.feature_session_number = feature_session.feature_session_number
    join stg_users as volunteer
        on timeline.user_number = volunteer.user_number
)

select
    classification_id,
    user_key,
    created_at,
    -- time of day and week, on the volunteer's clock
    sin(2 * pi() * (hour(local_time) + minute(local_time) / 60) / 24) as hour_sin,
    cos(2 * pi() * (hour(local_time) + minute(local_time) / 60) / 24) as hour_cos,
    sin(2 * pi() * (isodow(local_time) - 1) / 7) as weekday_sin,
    cos(2 * pi() * (isodow(local_time) - 1) / 7) as weekday_cos,
    isodow(local_time) >= 6 as is_weekend,
    utc_offset_minutes is not null as has_utc_offset,
    -- the task and the volunteer
    ln(1 + task_seconds) as log_task_seconds,
    ln((1 + task_seconds) / (1 + mean_task_seconds_last_10)) as duration_trend,
    ln(1 + seconds_since_previous) as log_seconds_since_previous,
    switched_workflow,
    is_mobile,
    is_tablet,
    is_desktop,
    is_anonymous,
    -- the current session, so far
    ln(position_in_session) as log_position_in_session,
    ln(1 + session_minutes_so_far) as log_session_minutes_so_far,
    short_breaks_in_session,
    ln(1 + mean_gap_last_10) as log_mean_gap_last_10,
    ln((1 + seconds_since_previous) / (1 + mean_gap_last_10)) as gap_trend,
    -- the volunteer's history before this session
    ln(user_seq) as log_classifications_so_far,
    ln(feature_session_number) as log_sessions_so_far,
    ln(1 + active_minutes_before + session_minutes_so_far) as log_active_minutes_so_far,
    ln(1 + (epoch_us(created_at) - epoch_us(first_seen_at)) / 86400e6) as log_days_since_first_seen,
    ln(previous_session_classifications) as log_previous_session_classifications,
    ln(1 + previous_session_minutes) as log_previous_session_minutes,
    ln(mean_classifications_last_10_sessions) as log_mean_classifications_last_10_sessions,
    ln(1 + mean_minutes_last_10_sessions) as log_mean_minutes_last_10_sessions,
    ln(hours_since_previous_session) as log_hours_since_previous_session,
    ln(hours_since_previous_session / usual_hours_between_sessions) as session_gap_vs_usual
from classifications_in_context
