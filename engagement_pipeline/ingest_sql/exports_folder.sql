-- The one exports folder this warehouse is built from (see ingest's
-- check_exports_folder): a home holds one project's exports, never two mixed.
create table if not exists exports_folder (
    folder varchar not null,
    recorded_at timestamptz not null
);
