-- Step 4a, choose: the rows of this file to insert into classifications, part
-- id_part of id_parts by a hash of the id (see insert_classifications.sql). A
-- classification already stored is kept as first stored; within the file the
-- first line wins. Parameters: getvariable('id_parts'), getvariable('id_part').
-- The rows are chosen by rowid (one small aggregate over two integer columns),
-- so the insert itself is a plain one: no conflict can arise, and no wide row is
-- hashed or grouped (INSERT OR IGNORE with a window over whole rows took three
-- times as long at 1.29M rows).
create or replace temp table chosen_rows as
select min(first_lines.rowid) as idx
from parsed_rows as first_lines
where
    first_lines.reason is null
    and hash(first_lines.classification_id) % getvariable('id_parts') = getvariable('id_part')
    and not exists (
        select 1 from classifications
        where
            classifications.classification_id = first_lines.classification_id
            and hash(classifications.classification_id) % getvariable('id_parts') = getvariable('id_part')
    )
group by first_lines.classification_id;
