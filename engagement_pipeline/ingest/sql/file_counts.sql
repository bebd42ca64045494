-- After the inserts: how the file's rows were used, and the commonest reasons
-- rows were rejected (for the message when too many were). Parameter:
--   getvariable('source_file')  the export's path
with reasons as (
    select
        split_part(rejected_rows.reason, ':', 1) as reason_kind,
        count(*) as reason_rows
    from rejected_rows
    where rejected_rows.source_file = getvariable('source_file')
    group by split_part(rejected_rows.reason, ':', 1)
)

select
    (
        select count(*) from parsed_rows
        where parsed_rows.reason is not null
    ) as value_rejects,
    (select coalesce(sum(reasons.reason_rows), 0) from reasons) as rows_rejected,
    (
        select list(reasons.reason_kind || ' (' || reasons.reason_rows || ' rows)' order by reasons.reason_rows desc)[1:3]
        from reasons
    ) as top_reasons;
