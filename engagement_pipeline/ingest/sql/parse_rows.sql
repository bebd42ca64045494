-- Step 2, parse: read the staged CSV (view csv_rows: every known column as
-- VARCHAR, in file order) into typed rows, each either usable or carrying the
-- reason it is not; a row's rowid in parsed_rows is its position in the file.
-- Parameter: getvariable('salt'), the salt for hashing user names (CONTRACT.md, Privacy).
--
-- user_id, the key of a logged-in volunteer, comes in three shapes: an
-- integer (Panoptes), a float with a zero fraction (`1234.0`, a spreadsheet
-- or R re-save: key `1234`), or any other text, e.g. the hex digest of an
-- anonymised export. Other text is kept as the key as it is: it is already
-- what the publisher chose to share, and it is treated like any other key
-- (never published beyond the warehouse, never joined to anything else).
create or replace temp table parsed_rows as
with typed as (
    select
        -- A Panoptes id is a plain decimal integer: no 0x10, 1e9 or 640_000_024.
        case
            when regexp_full_match(trim(classification_id), '[0-9]+')
                then try_cast(trim(classification_id) as bigint)
        end as classification_id,
        case
            when regexp_full_match(trim(user_id), '[0-9]{1,18}') then cast(cast(trim(user_id) as bigint) as varchar)
            when regexp_full_match(trim(user_id), '[0-9]{1,18}\.0*')
                then cast(cast(split_part(trim(user_id), '.', 1) as bigint) as varchar)
            else nullif(trim(user_id), '')
        end as user_id,
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
        nullif(trim(subject_ids), '') as subject_ids,
        -- The row as read, for rejected_rows (user_ip is not staged; user_name never leaves this query).
        {
            classification_id: classification_id,
            user_id: user_id,
            workflow_id: workflow_id,
            workflow_name: workflow_name,
            workflow_version: workflow_version,
            created_at: created_at,
            gold_standard: gold_standard,
            expert: expert,
            metadata: metadata,
            annotations: annotations,
            subject_data: subject_data,
            subject_ids: subject_ids
        } as row_as_read
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
                then 'missing or non-numeric classification_id: a plain decimal integer is expected'
            when created_at_text is null
                then 'missing created_at'
            when created_at is null
                then 'unparseable created_at'
            when created_at < timestamptz '2007-07-01 00:00:00+00'
                then 'created_at before Zooniverse existed (2007-07)'
            when created_at > now() + interval 1 day
                then 'created_at in the future'
            when user_id is null and user_name is null
                then 'no user_id and no user_name'
        end as reason
    from with_metadata
)

select
    reason,
    classification_id,
    coalesce(user_id, 'h:' || left(sha256(getvariable('salt') || user_name), 24)) as user_key,
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
    subject_ids,
    -- JSON text for a rejected row only (the CASE computes it for those rows alone), NULL for the others.
    case when reason is not null then cast(to_json(row_as_read) as varchar) end as row_as_read,
    -- The file's names, as a salted 64-bit digest, to withhold them by value
    -- from a rejected row whose columns are shifted (temp table, dropped after the file).
    hash(getvariable('salt') || user_name) as name_digest
from judged;
