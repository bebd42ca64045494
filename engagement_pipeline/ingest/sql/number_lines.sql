-- Step 3, number lines: the physical line each row starts on, for the rows
-- read (row_lines: idx, record_line, quoted_newlines, raw_line) and for the
-- records the parser rejected (reject_lines: record_line, raw_line).
-- Parameters:
--   getvariable('records')              data records DuckDB saw (rows read + parser rejects)
--   getvariable('one_line_per_record')  true when the newline count shows no quoted newlines
-- DuckDB numbers records, not lines, and skips the records it rejects; a
-- row's line is its record number plus the newlines quoted inside the rows
-- before it. With one line per record (the usual case) the newline count is
-- a constant zero and the file is not read again. (Lines over the reader's
-- limit were replaced by a one-field placeholder line before the read, so
-- DuckDB rejects and numbers them like any other bad line.)
create or replace temp table row_newlines as
select
    coalesce(
        length(concat_ws('', *columns(*))) - length(replace(concat_ws('', *columns(*)), chr(10), '')), 0
    ) as quoted_newlines
from csv_rows
where not getvariable('one_line_per_record');

create or replace temp table row_lines as
with accepted as (
    select
        parsed_rows.rowid as idx,
        coalesce(row_newlines.quoted_newlines, 0) as quoted_newlines
    from parsed_rows
    left join row_newlines on parsed_rows.rowid = row_newlines.rowid
),

parser_rejects as (select distinct ingest_rejects.line from ingest_rejects),

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
inner join free_record_lines on accepted.idx = free_record_lines.idx
where not getvariable('one_line_per_record')

union all

-- One line per record: every row's line is its record's (the running sum
-- above, a sort of every row, would add zeros).
select
    parsed_rows.rowid as idx,
    free_record_lines.record_line,
    0 as quoted_newlines,
    free_record_lines.record_line as raw_line
from parsed_rows
inner join free_record_lines on parsed_rows.rowid = free_record_lines.idx
where getvariable('one_line_per_record');

create or replace temp table reject_lines as
select
    parser_rejects.line as record_line,
    parser_rejects.line + coalesce((
        select sum(row_lines.quoted_newlines)
        from row_lines
        where row_lines.record_line < parser_rejects.line
    ), 0) as raw_line
from (select distinct ingest_rejects.line from ingest_rejects) as parser_rejects;
