-- Per export path: the size, modification time and quick fingerprint last seen with a loaded content.
select
    source_file,
    bytes,
    mtime_ns,
    quick_sha256,
    sha256
from ingested_fingerprints;
