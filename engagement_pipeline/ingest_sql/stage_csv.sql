-- Step 1, stage: read one CSV into temp table csv_rows (every column VARCHAR,
-- in file order) and the rows DuckDB's parser could not read into
-- ingest_rejects. Parameters come in as variables:
--   getvariable('csv_path')        the file to read (UTF-8, plain or gzip)
--   getvariable('csv_columns')     struct of the file's columns: known Panoptes
--                                  names kept, others named extra_<i>
--   getvariable('max_line_bytes')  the longest row read
--   getvariable('buffer_bytes')    DuckDB's read buffer
-- user_ip is dropped by the reader's projection: it is never staged, so
-- never spilled to disk. A Panoptes column the file lacks is added, NULL.
drop table if exists csv_rows;
drop table if exists ingest_rejects;
drop table if exists ingest_scans;

create temp table csv_rows as
select columns(lambda c: c != 'user_ip')
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

alter table csv_rows add column if not exists classification_id varchar;
alter table csv_rows add column if not exists user_name varchar;
alter table csv_rows add column if not exists user_id varchar;
alter table csv_rows add column if not exists workflow_id varchar;
alter table csv_rows add column if not exists workflow_name varchar;
alter table csv_rows add column if not exists workflow_version varchar;
alter table csv_rows add column if not exists created_at varchar;
alter table csv_rows add column if not exists gold_standard varchar;
alter table csv_rows add column if not exists expert varchar;
alter table csv_rows add column if not exists metadata varchar;
alter table csv_rows add column if not exists annotations varchar;
alter table csv_rows add column if not exists subject_data varchar;
alter table csv_rows add column if not exists subject_ids varchar;
