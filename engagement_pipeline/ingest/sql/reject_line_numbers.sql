-- The physical lines of the parser's rejects, for the load to read from the file.
select raw_line from reject_lines
order by raw_line;
