-- After the parse: rows read, lines the parser rejected, how many of those
-- are invalid UTF-8 (then the file is read again from a UTF-8 copy), and the
-- rows read whose values cannot be used.
select
    (select count(*) from parsed_rows) as rows_staged,
    (select count(distinct line) from ingest_rejects) as parser_rejects,
    (
        select count(*) from ingest_rejects
        where error_type = 'INVALID ENCODING'
    ) as invalid_encoding,
    (
        select count(*) from parsed_rows
        where parsed_rows.reason is not null
    ) as value_rejects;
