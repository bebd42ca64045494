-- Back to DuckDB's defaults after the ingest.
reset enable_progress_bar;
reset enable_progress_bar_print;
