-- How many times an operation was taken over after its worker stopped renewing its lease
-- (a crash, a kill, a lost connection): a run that keeps killing its worker is given up.
ALTER TABLE background_operations ADD COLUMN rescue_count BIGINT NOT NULL DEFAULT 0;
