-- DuckDB's memory_limit now (the load sets its own and puts this one back).
select current_setting('memory_limit') as memory_limit;
