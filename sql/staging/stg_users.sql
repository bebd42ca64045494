-- One row per volunteer: the user_key the ingest gave them, and a compact
-- integer user_number (users numbered in user_key order).
-- user_number exists for speed: the models partition, sort and join by user
-- again and again, and integers do that far faster than strings. It is an
-- internal key; published tables carry user_key.

select
    user_key,
    row_number() over (order by user_key) as user_number
from (select distinct user_key from classifications) as known_users
