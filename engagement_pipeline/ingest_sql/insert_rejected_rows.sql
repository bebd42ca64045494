-- Step 4, insert: the unusable rows into rejected_rows, with file, line,
-- reason and raw text (never user_ip or user_name). A changed file is read
-- again: its earlier rejects are replaced, not repeated. Parameters:
--   getvariable('source_file')    the export's path
--   getvariable('ip_position')    1-based position of user_ip in the header, 0 if absent
--   getvariable('name_position')  1-based position of user_name in the header, 0 if absent
--   getvariable('header_fields')  the number of fields in the header
delete from rejected_rows
where source_file = getvariable('source_file');

insert into rejected_rows
-- Rows the parser read whose values cannot be used.
select
    getvariable('source_file') as source_file,
    row_lines.raw_line as line_number,
    parsed_rows.reason,
    to_json({
        classification_id: r.classification_id,
        user_id: r.user_id,
        workflow_id: r.workflow_id,
        workflow_name: r.workflow_name,
        workflow_version: r.workflow_version,
        created_at: r.created_at,
        gold_standard: r.gold_standard,
        expert: r.expert,
        metadata: r.metadata,
        annotations: r.annotations,
        subject_data: r.subject_data,
        subject_ids: r.subject_ids
    })::varchar as raw_text,
    now() as rejected_at
from parsed_rows
inner join row_lines on parsed_rows.idx = row_lines.idx
inner join csv_rows as r on parsed_rows.idx = r.rowid
where parsed_rows.reason is not null

union all

-- Lines the CSV parser could not read. They are split into fields quote-aware
-- (a quoted "Smith, John" is one field) and user_name and user_ip blanked by
-- position; a line with more or fewer fields than the header is misaligned,
-- so any field could hold them: its fields are withheld.
select
    getvariable('source_file') as source_file,
    e.line
    + coalesce((
        select sum(row_lines.quoted_newlines)
        from row_lines
        where row_lines.record_line < e.line
    ), 0) as line_number,
    'malformed CSV: ' || e.error_type || ': ' || e.error_message as reason,
    case
        when getvariable('ip_position') = 0 and getvariable('name_position') = 0 then e.line_text
        when len(e.line_fields) = getvariable('header_fields')
            then array_to_string(
                list_transform(
                    range(1, len(e.line_fields) + 1),
                    lambda i: case
                        when i in (getvariable('ip_position'), getvariable('name_position')) then ''
                        else e.line_fields[i]
                    end
                ),
                ','
            )
        else
            'fields withheld: ' || len(e.line_fields) || ' fields where the header has ' || getvariable('header_fields')
            || ', so user_ip or user_name could be in any of them'
    end as raw_text,
    now() as rejected_at
from (
    select
        first_reject.line,
        first_reject.error_type,
        first_reject.error_message,
        trim(first_reject.csv_line, chr(10) || chr(13)) as line_text,
        regexp_extract_all(',' || line_text, ',("(?:[^"]|"")*"?|[^,]*)', 1) as line_fields
    from (
        select distinct on (ingest_rejects.line) *
        from ingest_rejects
        order by ingest_rejects.line
    ) as first_reject
) as e;
