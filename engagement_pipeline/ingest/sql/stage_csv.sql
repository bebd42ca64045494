-- Step 1, stage: csv_rows, a view of one CSV file as text (every column
-- VARCHAR, in file order). Nothing is read here: the parse step reads the
-- file once, and the line numbering reads it again only when rows hold
-- quoted newlines. Rows DuckDB's parser cannot read go to ingest_rejects.
-- Parameters come in as variables:
--   getvariable('csv_path')        the file to read (UTF-8, plain or gzip)
--   getvariable('csv_columns')     struct of the file's columns: known Panoptes
--                                  names kept, others named extra_<i>
--   getvariable('max_line_bytes')  the longest row read (longer ones are
--                                  dropped by DuckDB; the scan finds them)
--   getvariable('buffer_bytes')    DuckDB's read buffer
-- user_ip (and every column not of Panoptes', extra_<i>) is dropped by the
-- reader's projection: it is never staged, so never spilled to disk, and a
-- header of thousands of columns binds in milliseconds. With
-- getvariable('every_column') the other columns are staged too, for the
-- line numbering to count the newlines quoted in them (a rare file's need). A Panoptes column the file lacks comes from the
-- empty table every_known_column, as NULL.
drop view if exists csv_rows;
drop table if exists ingest_rejects;
drop table if exists ingest_scans;

create or replace temp table every_known_column (
    classification_id varchar,
    user_name varchar,
    user_id varchar,
    workflow_id varchar,
    workflow_name varchar,
    workflow_version varchar,
    created_at varchar,
    gold_standard varchar,
    expert varchar,
    metadata varchar,
    annotations varchar,
    subject_data varchar,
    subject_ids varchar
);

create temp view csv_rows as
select * from every_known_column
union all by name
select
    columns(
        lambda c: (getvariable('every_column') and c != 'user_ip') or c in (
            'classification_id', 'user_name', 'user_id', 'workflow_id', 'workflow_name', 'workflow_version',
            'created_at', 'gold_standard', 'expert', 'metadata', 'annotations', 'subject_data', 'subject_ids'
        )
    )
from read_csv(
    getvariable('csv_path'),
    header = true,
    auto_detect = false,
    columns = getvariable('csv_columns'),
    delim = ',',
    quote = '"',
    escape = '"',
    nullstr = ['NA', ''],
    strict_mode = true,
    max_line_size = getvariable('max_line_bytes'),
    buffer_size = getvariable('buffer_bytes'),
    store_rejects = true,
    rejects_table = 'ingest_rejects',
    rejects_scan = 'ingest_scans'
);
