-- Step 2, number lines: row_lines(idx, record_line, quoted_newlines, raw_line),
-- the physical line each staged row starts on. Parameters:
--   getvariable('records')              data records in the file (rows staged + parser rejects)
--   getvariable('one_line_per_record')  true when the newline count shows no quoted newlines
-- DuckDB counts records, not lines, and skips the records it rejects; the
-- line of a row is its record number plus the newlines quoted inside the rows
-- before it. With one line per record (the usual case) that sum is zero and,
-- the condition being a constant, is not computed.
create or replace temp table row_lines as
with accepted as (
    select
        rowid as idx,
        case
            when getvariable('one_line_per_record') then 0
            else coalesce(
                length(concat_ws('', *columns(*))) - length(replace(concat_ws('', *columns(*)), chr(10), '')), 0
            )
        end as quoted_newlines
    from csv_rows
),

parser_rejects as (select distinct line from ingest_rejects),

free_record_lines as (
    select
        record_numbers.record_line,
        row_number() over (order by record_numbers.record_line) - 1 as idx
    from range(2, getvariable('records') + 2) as record_numbers (record_line)
    where record_numbers.record_line not in (select parser_rejects.line from parser_rejects)
)

select
    accepted.idx,
    free_record_lines.record_line,
    accepted.quoted_newlines,
    free_record_lines.record_line
    + coalesce(
        sum(accepted.quoted_newlines) over (
            order by accepted.idx rows between unbounded preceding and 1 preceding
        ),
        0
    ) as raw_line
from accepted
inner join free_record_lines on accepted.idx = free_record_lines.idx;
