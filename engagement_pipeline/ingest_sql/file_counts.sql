-- After the inserts: how the file's rows were used.
select
    (
        select count(*) from parsed_rows
        where reason is not null
    ) as value_rejects,
    (select count(distinct line) from ingest_rejects) as parser_rejects;
