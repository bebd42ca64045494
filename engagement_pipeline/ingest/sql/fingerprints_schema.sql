-- What recognises a loaded export without reading it (known_files.py): its path,
-- size, modification time and quick fingerprint when its content (sha256) was
-- last loaded or recognised by its full digest.
create table if not exists ingested_fingerprints (
    source_file varchar primary key,
    bytes bigint not null,
    mtime_ns bigint not null,
    quick_sha256 varchar not null,
    sha256 varchar not null
);
