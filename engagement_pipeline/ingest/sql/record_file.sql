-- Step 5, record: the file's content as loaded, so a rerun skips it.
-- Parameters: getvariable('sha256'), getvariable('source_file'),
-- getvariable('bytes') and the counts rows_read, rows_inserted,
-- rows_duplicate, rows_rejected.
insert or replace into ingested_files
values (
    getvariable('sha256'),
    getvariable('source_file'),
    getvariable('bytes'),
    getvariable('rows_read'),
    getvariable('rows_inserted'),
    getvariable('rows_duplicate'),
    getvariable('rows_rejected'),
    now()
);
