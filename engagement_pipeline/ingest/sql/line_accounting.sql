-- After numbering: the physical lines the rows account for (header, rows
-- read with their quoted newlines, parser rejects with theirs). The load
-- compares it with the scan's count: a shortfall is a row lost.
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
    ) as lines_accounted;
