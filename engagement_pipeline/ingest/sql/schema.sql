-- The warehouse's ingested tables. Idempotent: run on every ingest.
-- Times are TIMESTAMPTZ in UTC (the connection runs SET TimeZone = 'UTC').

-- No primary key on classification_id: DuckDB builds its ART index in memory,
-- which no memory_limit bounds or spills (38.5M ids ran the 1 GB ingest out of
-- memory). One row per id is kept by insert_classifications.sql (the first
-- line wins, an id already stored is skipped) and checked by the asset check
-- classifications_classification_id_unique. A warehouse made before keeps its
-- key and works as before, up to the exports its index fits in memory.
create table if not exists classifications (
    classification_id bigint not null,
    user_key varchar not null,  -- user_id, or a salted hash of user_name (CONTRACT.md, Privacy)
    is_anonymous boolean not null,  -- a not-logged-in volunteer
    workflow_id bigint,
    workflow_version varchar,
    created_at timestamptz not null,
    started_at timestamptz,  -- metadata.started_at (browser clock)
    finished_at timestamptz,  -- metadata.finished_at (browser clock)
    utc_offset_minutes integer,  -- local time = UTC + this (metadata.utc_offset, sign corrected)
    device_class varchar not null,  -- mobile | tablet | desktop | unknown, from metadata.user_agent
    browser_session varchar,  -- metadata.session
    gold_standard boolean,
    expert boolean,
    subject_ids varchar,
    source_file varchar not null,
    source_line bigint not null,  -- line of the file where the row starts (1 = header)
    ingested_at timestamptz not null
);

create table if not exists rejected_rows (
    source_file varchar not null,
    line_number bigint,
    reason varchar not null,
    raw_text varchar,  -- the row, with user_ip and user_name removed
    rejected_at timestamptz not null
);

-- One row per file content ever loaded: a file seen again with the same
-- sha256 is skipped; a file whose content changed is read again.
create table if not exists ingested_files (
    sha256 varchar primary key,
    source_file varchar not null,
    bytes bigint not null,
    rows_read bigint not null,
    rows_inserted bigint not null,
    rows_duplicate bigint not null,
    rows_rejected bigint not null,
    ingested_at timestamptz not null
);
