-- The classifications asset's preview: the largest workflow and device groups.
select
    workflow_id,
    device_class,
    count(*) as classifications,
    min(created_at)::varchar as first_created_at,
    max(created_at)::varchar as last_created_at
from classifications
group by all
order by classifications desc
limit 8;
