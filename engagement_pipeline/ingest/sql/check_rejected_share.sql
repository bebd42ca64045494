-- Asset check: rows read and rejected, over the latest content of each file
-- (a changed file's rejects replace its earlier ones).
with latest as (
    select
        rows_read,
        rows_rejected
    from ingested_files
    qualify row_number() over (partition by source_file order by ingested_at desc) = 1
)

select
    coalesce(sum(rows_read), 0) as rows_read,
    coalesce(sum(rows_rejected), 0) as rows_rejected
from latest;
