-- Asset check: classification ids stored more than once.
select count(*) - count(distinct classification_id) as duplicate_ids from classifications;
