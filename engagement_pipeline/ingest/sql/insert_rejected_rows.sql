-- Step 4, insert: the unusable rows into rejected_rows, with file, line,
-- reason and raw text (never user_ip or user_name). Run after
-- delete_rejected_rows, and only when the file has rejects (the name digests
-- below cost a pass over every row). Parameters:
--   getvariable('source_file')        the export's path
--   getvariable('ip_position')        1-based position of user_ip in the header, 0 if absent
--   getvariable('name_position')      1-based position of user_name in the header, 0 if absent
--   getvariable('header_fields')      the number of fields in the header
--   getvariable('reject_line_numbers'), getvariable('reject_line_texts')
--                                     the physical lines of the parser's rejects, as read
--                                     from the file by the load (not DuckDB's csv_line)
--   getvariable('malformed_lines'), ..._codes, ..._fields, ..._bytes, ..._texts
--                                     the records the scan left out of the file DuckDB read
--                                     (structure.py): first line, problem, fields, bytes, text or NULL
--   getvariable('max_line_bytes'), getvariable('salt')

-- A value that may be a volunteer's name or IP is withheld wherever it
-- stands: a row whose fields are shifted carries user_ip or user_name in
-- another column, and a free-text field may quote them. A value that is, or
-- holds as a word, a user_name of the file (matched by its salted digest
-- against every user_name of the file) is withheld whole; IPv4 and IPv6
-- addresses (IPv4-mapped ones too) and Panoptes' 20-hex-digit IP hashes are
-- cut out of it wherever they stand.
create or replace temp macro without_addresses(v) as
regexp_replace(
    regexp_replace(
        regexp_replace(
            v,
            '(^|[^0-9.])[0-9]{1,3}(\.[0-9]{1,3}){3}',
            '\1(withheld)', 'g'
        ),
        '(^|[^0-9A-Za-z:])(([0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}'
        || '|[0-9A-Fa-f]{1,4}(:[0-9A-Fa-f]{1,4}){0,6}::([0-9A-Fa-f]{1,4}(:[0-9A-Fa-f]{1,4}){0,6})?'
        || '|::[0-9A-Fa-f]{1,4}(:[0-9A-Fa-f]{1,4}){0,6})(:?\(withheld\))?',
        '\1(withheld)', 'g'
    ),
    '(^|[^0-9A-Fa-f])[0-9a-f]{20}($|[^0-9A-Fa-f])',
    '\1(withheld)\2', 'g'
);

create or replace temp macro withheld(v) as
case
    when
        hash(getvariable('salt') || trim(v)) in (select parsed_rows.name_digest from parsed_rows)
        or exists (
            select 1
            from unnest(regexp_extract_all(v, '[^\s,;:!?"''`()\[\]{}<>=/\\|@&*+^%$#~]+')) as word (token)
            where
                hash(getvariable('salt') || word.token) in (select parsed_rows.name_digest from parsed_rows)
                or hash(getvariable('salt') || trim(word.token, '.-_')) in (select parsed_rows.name_digest from parsed_rows)
        )
        then '(withheld: may be a user_ip or user_name)'
    else without_addresses(v)
end;

create or replace temp table unreadable_records as
with first_reject as (
    select distinct on (ingest_rejects.line) *
    from ingest_rejects
    order by ingest_rejects.line
),

read_lines as (
    select
        unnest(getvariable('reject_line_numbers'))::bigint as raw_line,
        unnest(getvariable('reject_line_texts'))::varchar as line_text
)

select
    reject_lines.raw_line,
    'malformed CSV: ' || first_reject.error_type || ': ' || first_reject.error_message as reason,
    null::varchar as fixed_text,
    read_lines.line_text
from first_reject
inner join reject_lines on first_reject.line = reject_lines.record_line
left join read_lines on reject_lines.raw_line = read_lines.raw_line

union all

select
    scanned.raw_line,
    case scanned.code
        when 1 then 'malformed CSV: ' || scanned.field_total || ' fields where the header has ' || getvariable('header_fields')
        when 2 then 'malformed CSV: a quote inside an unquoted field, or text after a closing quote'
        when 3 then 'malformed CSV: a carriage return inside an unquoted field'
        when 4 then 'malformed CSV: a quoted field is not closed before the end of the file'
        else
            'line too long: ' || scanned.record_bytes || ' bytes, over the ' || getvariable('max_line_bytes')
            || ' a row may have; shorten the row (its annotations or subject_data?) and run the ingest again'
    end as reason,
    case
        when scanned.code = 1
            then
                'fields withheld: ' || scanned.field_total || ' fields where the header has '
                || getvariable('header_fields') || ', so user_ip or user_name could be in any of them'
        when scanned.code = 5 then '(withheld: too long to keep)'
    end as fixed_text,
    scanned.line_text
from (
    select
        unnest(getvariable('malformed_lines'))::bigint as raw_line,
        unnest(getvariable('malformed_codes'))::bigint as code,
        unnest(getvariable('malformed_fields'))::bigint as field_total,
        unnest(getvariable('malformed_bytes'))::bigint as record_bytes,
        unnest(getvariable('malformed_texts'))::varchar as line_text
) as scanned;

insert into rejected_rows
-- Rows the parser read whose values cannot be used.
select
    getvariable('source_file') as source_file,
    row_lines.raw_line as line_number,
    rejected.reason,
    case
        -- A non-numeric id where the id should be: the row's columns are
        -- likely shifted, so any value could be a name or an IP: withheld whole.
        when rejected.reason like 'missing or non-numeric classification_id%' and rejected.row_as_read['classification_id'] is not null
            then '(withheld: the row''s columns look shifted, so user_ip or user_name could be in any of them)'
        else
            to_json({
                classification_id: withheld(rejected.row_as_read['classification_id']),
                user_id: withheld(rejected.row_as_read['user_id']),
                workflow_id: withheld(rejected.row_as_read['workflow_id']),
                workflow_name: withheld(rejected.row_as_read['workflow_name']),
                workflow_version: withheld(rejected.row_as_read['workflow_version']),
                created_at: withheld(rejected.row_as_read['created_at']),
                gold_standard: withheld(rejected.row_as_read['gold_standard']),
                expert: withheld(rejected.row_as_read['expert']),
                metadata: withheld(rejected.row_as_read['metadata']),
                annotations: withheld(rejected.row_as_read['annotations']),
                subject_data: withheld(rejected.row_as_read['subject_data']),
                subject_ids: withheld(rejected.row_as_read['subject_ids'])
            })::varchar
    end as raw_text,
    now() as rejected_at
from (
    select
        parsed_rows.rowid as idx,
        parsed_rows.reason,
        from_json(
            parsed_rows.row_as_read,
            '{"classification_id": "VARCHAR", "user_id": "VARCHAR", "workflow_id": "VARCHAR", '
            || '"workflow_name": "VARCHAR", "workflow_version": "VARCHAR", "created_at": "VARCHAR", '
            || '"gold_standard": "VARCHAR", "expert": "VARCHAR", "metadata": "VARCHAR", '
            || '"annotations": "VARCHAR", "subject_data": "VARCHAR", "subject_ids": "VARCHAR"}'
        ) as row_as_read
    from parsed_rows
    where parsed_rows.reason is not null
) as rejected
inner join row_lines on rejected.idx = row_lines.idx

union all

-- Records that could not be read as CSV: those the scan before DuckDB left
-- out of the file it read (structure.py: their code, fields, bytes and, for a
-- few short ones, their text), and any DuckDB's parser still rejected. Their
-- text is split into fields quote-aware (a quoted "Smith, John" is one field)
-- and user_name and user_ip blanked by position, every other field withheld
-- by value as above; a record with more or fewer fields than the header is
-- misaligned, so any field could hold them: its fields are withheld.
select
    getvariable('source_file') as source_file,
    e.raw_line as line_number,
    e.reason,
    case
        when e.field_count = getvariable('header_fields') or (getvariable('ip_position') = 0 and getvariable('name_position') = 0)
            then e.aligned_text
        else
            'fields withheld: ' || e.field_count || ' fields where the header has ' || getvariable('header_fields')
            || ', so user_ip or user_name could be in any of them'
    end as raw_text,
    now() as rejected_at
from (
    select
        reject_fields.raw_line,
        any_value(reject_fields.reason) as reason,
        count(*) as field_count,
        string_agg(
            case
                when reject_fields.field_position in (getvariable('ip_position'), getvariable('name_position')) then ''
                else withheld(reject_fields.field_text)
            end,
            ','
            order by reject_fields.field_position
        ) as aligned_text
    from (
        select
            unreadable.raw_line,
            unreadable.reason,
            unnest(regexp_extract_all(',' || coalesce(unreadable.line_text, ''), ',("(?:[^"]|"")*"?[^,]*|[^,]*)', 1)) as field_text,
            generate_subscripts(
                regexp_extract_all(',' || coalesce(unreadable.line_text, ''), ',("(?:[^"]|"")*"?[^,]*|[^,]*)', 1), 1
            ) as field_position
        from (
            select * from unreadable_records
            where fixed_text is null and line_text is not null
        ) as unreadable
    ) as reject_fields
    group by reject_fields.raw_line
) as e

union all

-- Those with no text to split: their reason and what stands for it.
select
    getvariable('source_file') as source_file,
    raw_line as line_number,
    reason,
    coalesce(fixed_text, '(withheld: not kept, the file has too many such records)') as raw_text,
    now() as rejected_at
from unreadable_records
where fixed_text is not null or line_text is null;
