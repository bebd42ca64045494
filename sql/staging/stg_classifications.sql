-- Classifications as the models see them: one row per classification, keyed
-- by the integer user_number of stg_users, with only the columns the models
-- use, all of them numbers or flags (cheap to carry through window sorts).
-- Browser clocks lie (tabs left open, clocks set wrong), so a task duration
-- that is missing or negative is unknown (NULL) and a long one is capped at
-- 30 minutes; a UTC offset beyond +/-14 hours is unknown too.

with classifications_with_raw_clocks as (
    select
        classification_id,
        user_key,
        is_anonymous,
        workflow_id,
        created_at,
        device_class,
        epoch(finished_at) - epoch(started_at) as raw_task_seconds,
        utc_offset_minutes as raw_utc_offset_minutes
    from classifications
)

select
    classification.classification_id,
    volunteer.user_number,
    classification.created_at,
    classification.workflow_id,
    classification.is_anonymous,
    classification.device_class = 'mobile' as is_mobile,
    classification.device_class = 'tablet' as is_tablet,
    classification.device_class = 'desktop' as is_desktop,
    case
        when classification.raw_task_seconds >= 0 then least(classification.raw_task_seconds, 30 * 60.0)
    end as task_seconds,
    case
        when abs(classification.raw_utc_offset_minutes) <= 14 * 60 then classification.raw_utc_offset_minutes
    end as utc_offset_minutes
from classifications_with_raw_clocks as classification
join stg_users as volunteer using (user_key)
