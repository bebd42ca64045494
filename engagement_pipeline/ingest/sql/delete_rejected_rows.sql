-- Step 4, before the rejects: a changed file is read again, so its earlier
-- rejects are replaced, not repeated. Parameter:
--   getvariable('source_file')  the export's path
delete from rejected_rows
where source_file = getvariable('source_file');
