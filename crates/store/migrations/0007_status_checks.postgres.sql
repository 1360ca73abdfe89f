-- Status columns hold only their enum's values (crates/domain: RefundStatus,
-- ReconcileState, InteractionStatus, ProcessExceptionStatus, and BackgroundOperation's
-- whole Salesforce picklist), and a refund under reconciliation only a status its
-- lifecycle allows (`RefundState::is_reachable`: pending/manual while Draft, settling
-- while Pending). Each rule is added NOT VALID and then validated: existing rows are
-- checked, and one that breaks a rule fails the migration with the constraint's name.
-- (Both steps run in the migration's one transaction.)
-- SQLite gets the same rules as triggers (0007_status_checks.sqlite.sql).
ALTER TABLE refunds ADD CONSTRAINT refunds_status_check
    CHECK (status IN ('Draft', 'Pending', 'Processed', 'Canceled')) NOT VALID;
ALTER TABLE refunds VALIDATE CONSTRAINT refunds_status_check;

ALTER TABLE refunds ADD CONSTRAINT refunds_reconcile_state_check
    CHECK (reconcile_state IN ('none', 'pending', 'settling', 'manual')) NOT VALID;
ALTER TABLE refunds VALIDATE CONSTRAINT refunds_reconcile_state_check;

ALTER TABLE refunds ADD CONSTRAINT refunds_lifecycle_check
    CHECK (reconcile_state NOT IN ('pending', 'manual', 'settling')
           OR (status = 'Draft' AND reconcile_state IN ('pending', 'manual'))
           OR (status = 'Pending' AND reconcile_state = 'settling')) NOT VALID;
ALTER TABLE refunds VALIDATE CONSTRAINT refunds_lifecycle_check;

ALTER TABLE background_operations ADD CONSTRAINT background_operations_status_check
    CHECK (status IN ('New', 'Scheduled', 'Waiting', 'Running', 'Complete', 'Error', 'Canceled', 'Merged')) NOT VALID;
ALTER TABLE background_operations VALIDATE CONSTRAINT background_operations_status_check;

ALTER TABLE payment_gateway_logs ADD CONSTRAINT payment_gateway_logs_interaction_status_check
    CHECK (interaction_status IN ('Initiated', 'Success', 'Failed', 'Timeout', 'NoOp')) NOT VALID;
ALTER TABLE payment_gateway_logs VALIDATE CONSTRAINT payment_gateway_logs_interaction_status_check;

ALTER TABLE process_exceptions ADD CONSTRAINT process_exceptions_status_check
    CHECK (status IN ('New', 'Triaged', 'Paused', 'Resolved', 'Ignored', 'Voided')) NOT VALID;
ALTER TABLE process_exceptions VALIDATE CONSTRAINT process_exceptions_status_check;
