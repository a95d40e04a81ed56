-- One event for a group of phones placed by one command (a photo's codes, a bulk placement):
-- a photo of 1 000 phones appends one row to the log instead of 1 000.
insert into event_type (decider, event, description) values
    ('scene', 'pixels_located', 'several phones were placed by one observer''s one command');
