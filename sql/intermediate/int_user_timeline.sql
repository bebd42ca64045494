-- Every classification in its place in its user's own history, in the user's
-- order (created_at, then classification_id to break ties), with only what
-- was known at that moment: how many came before, the previous one (and the
-- one 10 before), the 30-minute feature session it falls in, the short
-- breaks (in-session gaps over 2 minutes) the user has taken so far, and the
-- mean task duration of the user's last 10 classifications.
-- Windows here look backwards only (lag, running sums, frames ending at the
-- current row), so no column depends on a later classification and every
-- feature built on this table is leak-free by construction. The 30-minute
-- feature gap is fixed on purpose: features must not change when the label
-- rules (run config of `sessions`) do.
-- Two sorts of every classification are the costliest step of the models,
-- so everything that needs the user's order is computed here, once, and the
-- rows carry only numbers and flags (no strings).
-- Time differences are taken on epoch microseconds: exact, and far cheaper
-- than TIMESTAMPTZ interval arithmetic (which goes through ICU calendars).

with classifications_in_user_order as (
    select
        *,
        row_number() over user_history as user_seq,
        lag(created_at) over user_history as previous_created_at,
        lag(created_at, 10) over user_history as created_at_10_before,
        (
            row_number() over user_history > 1
            and workflow_id is distinct from lag(workflow_id) over user_history
        ) as switched_workflow,
        first_value(created_at) over user_history as first_seen_at,
        avg(task_seconds) over last_10_of_user as mean_task_seconds_last_10
    from stg_classifications
    window
        user_order as (partition by user_number order by created_at, classification_id),
        user_history as (user_order rows between unbounded preceding and current row),
        last_10_of_user as (user_order rows between 9 preceding and current row)
),

classifications_with_feature_session_starts as (
    select
        *,
        (epoch_us(created_at) - epoch_us(previous_created_at)) / 1e6 as seconds_since_previous,
        coalesce(seconds_since_previous >= 30 * 60, true) as starts_feature_session,
        case when not starts_feature_session then seconds_since_previous end as seconds_since_previous_in_session,
        coalesce(seconds_since_previous_in_session > 2 * 60, false) as is_short_break
    from classifications_in_user_order
)

select
    * exclude (workflow_id),
    cast(sum(cast(starts_feature_session as integer)) over user_history as bigint) as feature_session_number,
    cast(sum(cast(is_short_break as integer)) over user_history as bigint) as short_breaks_so_far
from classifications_with_feature_session_starts
window user_history as (partition by user_number order by user_seq rows between unbounded preceding and current row)
