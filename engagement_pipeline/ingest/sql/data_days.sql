-- The days that hold data, for the classifications asset's metadata: the span
-- and the number of UTC days with at least one classification.
select
    min(created_at)::date::varchar as first_day,
    max(created_at)::date::varchar as last_day,
    count(distinct created_at::date) as days_with_data
from classifications;
