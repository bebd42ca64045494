-- After numbering, when the scan left malformed records out of the file DuckDB
-- read (structure.py): move each line number past the records left out before
-- it. Parameters: getvariable('removed_lines'), getvariable('removed_spans'),
-- the first line (in the export) and the line count of each record left out.
create or replace temp table removed_records as
with removed as (
    select
        unnest(getvariable('removed_lines'))::bigint as first_line,
        unnest(getvariable('removed_spans'))::bigint as span
),

numbered as (
    select
        removed.span,
        sum(removed.span) over (order by removed.first_line) as spans_through,
        -- the line of the file read that the next kept line took
        removed.first_line - sum(removed.span) over (order by removed.first_line) + removed.span as read_line
    from removed
)

select
    numbered.read_line,
    max(numbered.spans_through) as spans_before
from numbered
group by numbered.read_line;

create or replace temp table row_lines_in_export as
select
    row_lines.idx,
    row_lines.record_line,
    row_lines.quoted_newlines,
    row_lines.raw_line + coalesce(removed_records.spans_before, 0) as raw_line
from row_lines
asof left join removed_records on row_lines.raw_line >= removed_records.read_line;

create or replace temp table reject_lines_in_export as
select
    reject_lines.record_line,
    reject_lines.raw_line + coalesce(removed_records.spans_before, 0) as raw_line
from reject_lines
asof left join removed_records on reject_lines.raw_line >= removed_records.read_line;

drop table row_lines;
drop table reject_lines;
alter table row_lines_in_export rename to row_lines;
alter table reject_lines_in_export rename to reject_lines;
