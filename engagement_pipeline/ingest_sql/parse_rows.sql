-- Parse the staged CSV rows (temp table csv_rows: every known column as
-- VARCHAR, in file order) into typed rows, each either usable or carrying the
-- reason it is not; idx is the row's position in the file. Parameters come in as variables:
--   getvariable('salt')        the salt for hashing user names (CONTRACT.md, Privacy)
create or replace temp table parsed_rows as
with typed as (
    select
        rowid as idx,
        try_cast(trim(classification_id) as bigint) as classification_id,
        nullif(trim(user_id), '') as user_id_text,
        try_cast(trim(user_id) as bigint) as user_id,
        nullif(trim(user_name), '') as user_name,
        try_cast(trim(workflow_id) as bigint) as workflow_id,
        nullif(trim(workflow_version), '') as workflow_version,
        -- The Panoptes format first, then anything DuckDB reads as a time
        -- (ISO 8601, with or without an offset; naive times are UTC).
        coalesce(
            timezone('UTC', try_strptime(trim(created_at), '%Y-%m-%d %H:%M:%S UTC')),
            try_cast(trim(created_at) as timestamptz)
        ) as created_at,
        nullif(trim(created_at), '') as created_at_text,
        -- One parse of the metadata JSON per row; broken JSON gives NULLs, not an error.
        try(json_extract_string(
            metadata, ['$.started_at', '$.finished_at', '$.utc_offset', '$.user_agent', '$.session']
        )) as metadata_fields,
        lower(trim(gold_standard)) as gold_standard,
        nullif(trim(expert), '') as expert,
        nullif(trim(subject_ids), '') as subject_ids
    from csv_rows
),

with_metadata as (
    select
        typed.*,
        try_cast(typed.metadata_fields[1] as timestamptz) as started_at,
        try_cast(typed.metadata_fields[2] as timestamptz) as finished_at,
        -- metadata.utc_offset is JavaScript's getTimezoneOffset() in seconds:
        -- UTC minus local time. We store local minus UTC, in minutes.
        -(try_cast(typed.metadata_fields[3] as integer) // 60) as utc_offset_minutes,
        typed.metadata_fields[4] as user_agent,
        typed.metadata_fields[5] as browser_session
    from typed
),

judged as (
    select
        *,
        case
            when classification_id is null
                then 'missing or non-numeric classification_id'
            when created_at_text is null
                then 'missing created_at'
            when created_at is null
                then 'unparseable created_at'
            when created_at < timestamptz '2007-07-01 00:00:00+00'
                then 'created_at before Zooniverse existed (2007-07)'
            when created_at > now() + interval 1 day
                then 'created_at in the future'
            when user_id is null and user_name is null and user_id_text is null
                then 'no user_id and no user_name'
            when user_id is null and user_id_text is not null
                then 'non-numeric user_id'
        end as reason
    from with_metadata
)

select
    idx,
    reason,
    classification_id,
    case
        when user_id is not null then cast(user_id as varchar)
        else 'h:' || left(sha256(getvariable('salt') || user_name), 24)
    end as user_key,
    user_id is null and (user_name is null or user_name like 'not-logged-in%') as is_anonymous,
    workflow_id,
    workflow_version,
    created_at,
    started_at,
    finished_at,
    utc_offset_minutes,
    case
        when user_agent is null then 'unknown'
        when
            regexp_matches(user_agent, 'iPad|Tablet|Kindle|Silk')
            or (contains(user_agent, 'Android') and not contains(user_agent, 'Mobile')) then 'tablet'
        when regexp_matches(user_agent, 'Mobi|iPhone|iPod|Android|Windows Phone') then 'mobile'
        else 'desktop'
    end as device_class,
    browser_session,
    case gold_standard
        when 'true' then true when 't' then true when '1' then true
        when 'false' then false when 'f' then false when '0' then false
    end as gold_standard,
    expert is not null and lower(expert) not in ('false', 'f', '0') as expert,
    subject_ids
from judged;
