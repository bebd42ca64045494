-- After numbering: the physical lines the rows account for (header, rows
-- read with their quoted newlines, parser rejects with theirs, long lines).
-- The load compares it with the scan's count: a shortfall is a row lost.
-- Parameter: getvariable('long_lines') as in number_lines.sql.
with reject_texts as (
    select distinct on (ingest_rejects.line) trim(ingest_rejects.csv_line, chr(10) || chr(13)) as record_text
    from ingest_rejects
    order by ingest_rejects.line
)

select
    1
    + (select count(*) + coalesce(sum(row_lines.quoted_newlines), 0) from row_lines)
    + (
        select coalesce(sum(1 + length(reject_texts.record_text) - length(replace(reject_texts.record_text, chr(10), ''))), 0)
        from reject_texts
    )
    + len(getvariable('long_lines')) as lines_accounted;
