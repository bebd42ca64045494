-- Who to reach: the volunteers of one day's predictions file, most at risk
-- first (lowest P(continue) at their last classification of the day), with
-- their last activity and their work session so far at that moment.
-- `day_predictions` is that day's Parquet file with one more column,
-- `p_continue`: the probability at the champion's shortest horizon (a view
-- made by report.py). The session so far comes from the `features` row the
-- model scored (its 30-minute feature session): position and minutes are
-- stored there log-scaled and are turned back into a count and minutes.
-- Variable (SET VARIABLE by report.py): report_listed, how many to list.

with scored_rows as (
    -- the scored row is the user's last by (created_at, classification_id)
    select
        day_predictions.*,
        features.log_position_in_session,
        features.log_session_minutes_so_far
    from day_predictions
    left join features
        on
        day_predictions.user_key = features.user_key
        and day_predictions.last_classification_at = features.created_at
    qualify row_number() over (
        partition by day_predictions.user_key order by features.classification_id desc
    ) = 1
)

select
    user_key,
    p_continue,
    last_classification_at,
    n_classifications,
    round(exp(log_position_in_session))::integer as session_classifications_so_far,
    exp(log_session_minutes_so_far) - 1 as session_minutes_so_far
from scored_rows
order by p_continue, user_key
limit getvariable('report_listed')
