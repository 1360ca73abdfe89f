-- The rules of 0007_status_checks.postgres.sql for SQLite, which cannot add a CHECK to an
-- existing table (and rebuilding the tables is not worth the risk): for each rule, a
-- trigger before INSERT and one before UPDATE of its columns abort the statement with the
-- constraint's name, as a failed CHECK would. The closing UPDATE of each rule touches only
-- the rows that already break it (normally none): its trigger fails the migration on them,
-- as PostgreSQL's VALIDATE CONSTRAINT does.

CREATE TRIGGER refunds_status_check_insert BEFORE INSERT ON refunds
WHEN NEW.status NOT IN ('Draft', 'Pending', 'Processed', 'Canceled')
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: refunds_status_check');
END;
CREATE TRIGGER refunds_status_check_update BEFORE UPDATE OF status ON refunds
WHEN NEW.status NOT IN ('Draft', 'Pending', 'Processed', 'Canceled')
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: refunds_status_check');
END;
UPDATE refunds SET status = status WHERE status NOT IN ('Draft', 'Pending', 'Processed', 'Canceled');

CREATE TRIGGER refunds_reconcile_state_check_insert BEFORE INSERT ON refunds
WHEN NEW.reconcile_state NOT IN ('none', 'pending', 'settling', 'manual')
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: refunds_reconcile_state_check');
END;
CREATE TRIGGER refunds_reconcile_state_check_update BEFORE UPDATE OF reconcile_state ON refunds
WHEN NEW.reconcile_state NOT IN ('none', 'pending', 'settling', 'manual')
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: refunds_reconcile_state_check');
END;
UPDATE refunds SET reconcile_state = reconcile_state WHERE reconcile_state NOT IN ('none', 'pending', 'settling', 'manual');

CREATE TRIGGER refunds_lifecycle_check_insert BEFORE INSERT ON refunds
WHEN NOT (NEW.reconcile_state NOT IN ('pending', 'manual', 'settling')
          OR (NEW.status = 'Draft' AND NEW.reconcile_state IN ('pending', 'manual'))
          OR (NEW.status = 'Pending' AND NEW.reconcile_state = 'settling'))
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: refunds_lifecycle_check');
END;
CREATE TRIGGER refunds_lifecycle_check_update BEFORE UPDATE OF status, reconcile_state ON refunds
WHEN NOT (NEW.reconcile_state NOT IN ('pending', 'manual', 'settling')
          OR (NEW.status = 'Draft' AND NEW.reconcile_state IN ('pending', 'manual'))
          OR (NEW.status = 'Pending' AND NEW.reconcile_state = 'settling'))
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: refunds_lifecycle_check');
END;
UPDATE refunds SET status = status WHERE NOT (reconcile_state NOT IN ('pending', 'manual', 'settling')
       OR (status = 'Draft' AND reconcile_state IN ('pending', 'manual'))
       OR (status = 'Pending' AND reconcile_state = 'settling'));

CREATE TRIGGER background_operations_status_check_insert BEFORE INSERT ON background_operations
WHEN NEW.status NOT IN ('New', 'Scheduled', 'Waiting', 'Running', 'Complete', 'Error', 'Canceled', 'Merged')
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: background_operations_status_check');
END;
CREATE TRIGGER background_operations_status_check_update BEFORE UPDATE OF status ON background_operations
WHEN NEW.status NOT IN ('New', 'Scheduled', 'Waiting', 'Running', 'Complete', 'Error', 'Canceled', 'Merged')
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: background_operations_status_check');
END;
UPDATE background_operations SET status = status WHERE status NOT IN ('New', 'Scheduled', 'Waiting', 'Running', 'Complete', 'Error', 'Canceled', 'Merged');

CREATE TRIGGER payment_gateway_logs_interaction_status_check_insert BEFORE INSERT ON payment_gateway_logs
WHEN NEW.interaction_status NOT IN ('Initiated', 'Success', 'Failed', 'Timeout', 'NoOp')
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: payment_gateway_logs_interaction_status_check');
END;
CREATE TRIGGER payment_gateway_logs_interaction_status_check_update BEFORE UPDATE OF interaction_status ON payment_gateway_logs
WHEN NEW.interaction_status NOT IN ('Initiated', 'Success', 'Failed', 'Timeout', 'NoOp')
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: payment_gateway_logs_interaction_status_check');
END;
UPDATE payment_gateway_logs SET interaction_status = interaction_status WHERE interaction_status NOT IN ('Initiated', 'Success', 'Failed', 'Timeout', 'NoOp');

CREATE TRIGGER process_exceptions_status_check_insert BEFORE INSERT ON process_exceptions
WHEN NEW.status NOT IN ('New', 'Triaged', 'Paused', 'Resolved', 'Ignored', 'Voided')
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: process_exceptions_status_check');
END;
CREATE TRIGGER process_exceptions_status_check_update BEFORE UPDATE OF status ON process_exceptions
WHEN NEW.status NOT IN ('New', 'Triaged', 'Paused', 'Resolved', 'Ignored', 'Voided')
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: process_exceptions_status_check');
END;
UPDATE process_exceptions SET status = status WHERE status NOT IN ('New', 'Triaged', 'Paused', 'Resolved', 'Ignored', 'Voided');
