-- Step 4, insert: the usable rows into classifications. A classification
-- already stored is kept as first stored; within the file the first line wins.
-- Returns the number of rows inserted. Parameter:
--   getvariable('source_file')  the export's path
-- The rows to insert are chosen by rowid first (one small aggregate over two
-- integer columns), so the insert itself is a plain one: no conflict can
-- arise, and no wide row is hashed or grouped (INSERT OR IGNORE with a
-- window over whole rows took three times as long at 1.29M rows).
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
from parsed_rows
inner join row_lines on parsed_rows.rowid = row_lines.idx
where parsed_rows.rowid in (
    select min(first_lines.rowid)
    from parsed_rows as first_lines
    where
        first_lines.reason is null
        and not exists (
            select 1 from classifications
            where classifications.classification_id = first_lines.classification_id
        )
    group by first_lines.classification_id
);
