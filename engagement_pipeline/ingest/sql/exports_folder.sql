-- The one exports folder this warehouse is built from (exports_folder.py): a
-- home holds one project's exports, never two mixed. Returns the recorded
-- folder (no row before the first ingest) and the classifications stored.
create table if not exists exports_folder (
    folder varchar not null,
    recorded_at timestamptz not null
);

select
    (select max(folder) from exports_folder) as folder,
    (select count(*) from classifications) as classifications;
