-- DuckDB's memory_limit for what follows. Parameter: getvariable('memory_limit'), e.g. '1GB'.
set memory_limit = getvariable('memory_limit');
