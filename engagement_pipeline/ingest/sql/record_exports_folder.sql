-- Record getvariable('folder') as this warehouse's exports folder (replacing
-- one that stored nothing).
delete from exports_folder;
insert into exports_folder values (getvariable('folder'), now());
