-- Step 4b, insert: the rows chosen_rows holds (choose_rows.sql) into
-- classifications. Returns the number of rows inserted. Parameters:
--   getvariable('source_file')  the export's path
-- load.py runs both steps for each part of id_parts (by a hash of the id) in one
-- transaction: each part's hash tables (the ids of the file, the ids stored) hold
-- 1/id_parts of them, so memory stays bounded whatever the size of the export
-- and the warehouse (38.5M ids in one part ran the ingest's 1 GB out of memory;
-- DuckDB cannot spill a join's pointer table).
insert into classifications
select
    parsed_rows.classification_id,
    parsed_rows.user_key,
    parsed_rows.is_anonymous,
    parsed_rows.workflow_id,
    parsed_rows.workflow_version,
    parsed_rows.created_at,
    parsed_rows.started_at,
    parsed_rows.finished_at,
    parsed_rows.utc_offset_minutes,
    parsed_rows.device_class,
    parsed_rows.browser_session,
    parsed_rows.gold_standard,
    parsed_rows.expert,
    parsed_rows.subject_ids,
    getvariable('source_file') as source_file,
    row_lines.raw_line as source_line,
    now() as ingested_at
from chosen_rows
inner join parsed_rows on chosen_rows.idx = parsed_rows.rowid
inner join row_lines on chosen_rows.idx = row_lines.idx;
