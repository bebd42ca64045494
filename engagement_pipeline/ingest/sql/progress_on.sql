-- DuckDB computes a running statement's progress (read by query_progress from the ingest's progress
-- thread) only with its progress bar enabled; nothing is printed.
set enable_progress_bar = true;
set enable_progress_bar_print = false;
