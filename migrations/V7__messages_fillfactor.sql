-- A message's row is written once by the accept and then updated by the
-- status projector (status, status_seq, carrier, carrier_ref, updated_at:
-- no indexed column), typically once or twice. With full pages every
-- update put the new version on another page, with a new entry in each of
-- the table's indexes; with room left on each page the new version stays
-- beside the old (a heap-only update) and no index is touched. Pages
-- written from now on keep that room.
ALTER TABLE messages SET (fillfactor = 70);
