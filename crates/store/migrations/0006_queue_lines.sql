-- The queue as lines: every ParentKey (order summary) has a line, and an operation's place
-- in it is `seq`, taken from the line's row in the enqueue transaction (the row's lock, or
-- SQLite's single writer, orders concurrent enqueues: not a clock read).
CREATE TABLE queue_lines (
    parent_key TEXT PRIMARY KEY,
    last_seq BIGINT NOT NULL
);
ALTER TABLE background_operations ADD COLUMN seq BIGINT;
-- internal: set, to when it is due, only while the operation may be claimed: it is New or
-- Scheduled and no operation before it in its line is still to plan. The claim reads only
-- these rows, through a partial index, so it costs the same at any backlog.
ALTER TABLE background_operations ADD COLUMN claimable_at BIGINT;
-- internal: the money the operation's admission set aside, until it plans (NULL: admitted
-- before admissions set money aside).
ALTER TABLE background_operations ADD COLUMN admitted_amount BIGINT;
ALTER TABLE background_operations ADD COLUMN admitted_credit_memo_id TEXT;
ALTER TABLE background_operations ADD COLUMN admitted_credit_memo_amount BIGINT;
-- internal: the sum of the admitted, not yet planned operations' amounts.
ALTER TABLE order_summaries ADD COLUMN admitted_amount BIGINT NOT NULL DEFAULT 0;
ALTER TABLE credit_memos ADD COLUMN admitted_amount BIGINT NOT NULL DEFAULT 0;

-- A retry waiting for its time is Scheduled (Error is final).
UPDATE background_operations SET status = 'Scheduled' WHERE status = 'Error' AND retry_scheduled = 1;
-- Existing operations keep their submission order.
UPDATE background_operations SET seq = (SELECT COUNT(*) FROM background_operations p
    WHERE p.parent_key = background_operations.parent_key
      AND (p.submitted_at < background_operations.submitted_at
        OR (p.submitted_at = background_operations.submitted_at AND p.id <= background_operations.id)));
INSERT INTO queue_lines (parent_key, last_seq)
    SELECT parent_key, MAX(seq) FROM background_operations GROUP BY parent_key;
UPDATE background_operations SET claimable_at = process_after
    WHERE status IN ('New', 'Scheduled') AND NOT EXISTS (SELECT 1 FROM background_operations p
        WHERE p.parent_key = background_operations.parent_key AND p.seq < background_operations.seq
          AND p.planned_at IS NULL AND p.status IN ('New', 'Running', 'Scheduled'));

-- Replaced by the line and by the two partial indexes the claim reads.
DROP INDEX background_operations_parent;
DROP INDEX background_operations_claimable;
CREATE UNIQUE INDEX background_operations_line ON background_operations (parent_key, seq);
CREATE INDEX background_operations_ready ON background_operations (claimable_at)
    WHERE claimable_at IS NOT NULL;
CREATE INDEX background_operations_leases ON background_operations (lease_expires_at)
    WHERE status = 'Running';
CREATE INDEX background_operations_to_plan ON background_operations (parent_key, seq)
    WHERE planned_at IS NULL AND status IN ('New', 'Running', 'Scheduled');

-- PostgreSQL: the processes running workers, each heartbeating on the database's clock;
-- the Running operations of one silent for a few seconds are rescued then.
CREATE TABLE queue_processes (
    id TEXT PRIMARY KEY,
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);
