-- The content digests already loaded: a file with one of them is skipped.
select sha256 from ingested_files;
