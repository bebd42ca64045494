-- Step 4, insert: the usable rows into classifications. A classification
-- already stored is kept as first stored; within the file the first line wins.
-- Returns the number of rows inserted. Parameters:
--   getvariable('source_file')  the export's path
--   getvariable('id_parts'), getvariable('id_part')  this statement inserts the
--       ids whose hash falls in part id_part of id_parts (load.py runs every part
--       in one transaction): each part's hash tables (the ids of the file, the ids
--       stored) hold 1/id_parts of them, so memory stays bounded whatever the size
--       of the export and the warehouse (38.5M ids in one part ran the ingest's
--       1 GB out of memory; DuckDB cannot spill a join's pointer table).
-- The rows to insert are chosen by rowid first (one small aggregate over two
-- integer columns), so the insert itself is a plain one: no conflict can
-- arise, and no wide row is hashed or grouped (INSERT OR IGNORE with a
-- window over whole rows took three times as long at 1.29M rows).
create or replace temp table chosen_rows as
select min(first_lines.rowid) as idx
from parsed_rows as first_lines
where
    first_lines.reason is null
    and hash(first_lines.classification_id) % getvariable('id_parts') = getvariable('id_part')
    and not exists (
        select 1 from classifications
        where
            classifications.classification_id = first_lines.classification_id
            and hash(classifications.classification_id) % getvariable('id_parts') = getvariable('id_part')
    )
group by first_lines.classification_id;

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
