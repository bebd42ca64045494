-- Rows now in the two ingested tables (the assets' row counts).
select
    (select count(*) from classifications) as classifications,
    (select count(*) from rejected_rows) as rejected_rows;
