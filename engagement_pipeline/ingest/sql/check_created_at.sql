-- Asset check: created_at missing, or beyond the day of clock skew the ingest allows.
select
    count(*) filter (where created_at is null) as missing,
    count(*) filter (where created_at > now() + interval 1 day) as in_future
from classifications;
