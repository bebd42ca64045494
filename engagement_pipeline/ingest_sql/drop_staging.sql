-- The staging tables hold raw rows (ingest_rejects keeps user_ip): dropped
-- after every file, loaded or not.
drop table if exists csv_rows;
drop table if exists row_lines;
drop table if exists parsed_rows;
drop table if exists ingest_rejects;
drop table if exists ingest_scans;
