-- DuckDB's progress bar settings now, to be put back after the ingest.
select
    current_setting('enable_progress_bar') as bar,
    current_setting('enable_progress_bar_print') as bar_print;
