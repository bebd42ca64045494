-- DuckDB computes a running statement's progress (read by query_progress from the ingest's
-- progress thread) only with its progress bar enabled. Parameters: getvariable('bar'),
-- getvariable('bar_print') (the ingest prints its own lines, never DuckDB's bar).
set enable_progress_bar = getvariable('bar');
set enable_progress_bar_print = getvariable('bar_print');
