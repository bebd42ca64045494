-- The staging tables hold rows as read (ingest_rejects keeps user_ip): dropped
-- after every file, loaded or not; so is the salt.
drop view if exists csv_rows;
drop table if exists every_known_column;
drop table if exists row_newlines;
drop table if exists row_lines;
drop table if exists reject_lines;
drop table if exists removed_records;
drop table if exists unreadable_records;
drop table if exists chosen_rows;
drop table if exists parsed_rows;
drop table if exists ingest_rejects;
drop table if exists ingest_scans;
drop macro if exists withheld;
drop macro if exists without_addresses;
set variable salt = null;
