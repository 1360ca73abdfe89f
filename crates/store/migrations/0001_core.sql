-- Core schema. The same DDL runs on SQLite and PostgreSQL: every id is TEXT (the 18-char
-- Salesforce-style id), every amount is BIGINT minor units of the row's currency, every
-- timestamp is BIGINT milliseconds since the Unix epoch (UTC). Columns that Salesforce does
-- not have are internal and never shown by the API unless listed in the store's schema.

CREATE TABLE order_summaries (
    id TEXT PRIMARY KEY,
    order_number TEXT NOT NULL,
    order_life_cycle_type TEXT NOT NULL,
    status TEXT NOT NULL,
    grand_total_amount BIGINT NOT NULL,
    active_process_exception_count BIGINT NOT NULL DEFAULT 0,
    currency_iso_code TEXT NOT NULL,
    created_date BIGINT NOT NULL,
    last_modified_date BIGINT NOT NULL
);

CREATE TABLE payment_gateways (
    id TEXT PRIMARY KEY,
    payment_gateway_name TEXT NOT NULL,
    provider_type TEXT NOT NULL,
    status TEXT NOT NULL,
    base_url TEXT,
    merchant_credential_env TEXT,
    created_date BIGINT NOT NULL,
    last_modified_date BIGINT NOT NULL
);

CREATE TABLE order_payment_summaries (
    id TEXT PRIMARY KEY,
    order_summary_id TEXT NOT NULL REFERENCES order_summaries (id),
    method TEXT,
    type TEXT,
    authorization_amount BIGINT NOT NULL DEFAULT 0,
    captured_amount BIGINT NOT NULL DEFAULT 0,
    refunded_amount BIGINT NOT NULL DEFAULT 0,
    pending_refund_amount BIGINT NOT NULL DEFAULT 0,
    last_payment_gateway_log_id TEXT,
    last_payment_gateway_message TEXT,
    currency_iso_code TEXT NOT NULL,
    created_date BIGINT NOT NULL,
    last_modified_date BIGINT NOT NULL,
    CHECK (refunded_amount >= 0 AND pending_refund_amount >= 0
           AND refunded_amount + pending_refund_amount <= captured_amount)
);
CREATE INDEX order_payment_summaries_order ON order_payment_summaries (order_summary_id);

CREATE TABLE payments (
    id TEXT PRIMARY KEY,
    order_payment_summary_id TEXT REFERENCES order_payment_summaries (id),
    payment_gateway_id TEXT NOT NULL REFERENCES payment_gateways (id),
    amount BIGINT NOT NULL,
    type TEXT NOT NULL,
    status TEXT NOT NULL,
    gateway_ref_number TEXT,
    total_refund_applied BIGINT NOT NULL DEFAULT 0,
    -- internal: money reserved for refunds in flight against this payment
    pending_refund_amount BIGINT NOT NULL DEFAULT 0,
    currency_iso_code TEXT NOT NULL,
    created_date BIGINT NOT NULL,
    last_modified_date BIGINT NOT NULL,
    CHECK (total_refund_applied >= 0 AND pending_refund_amount >= 0
           AND total_refund_applied + pending_refund_amount <= amount)
);
CREATE INDEX payments_summary ON payments (order_payment_summary_id);

CREATE TABLE invoices (
    id TEXT PRIMARY KEY,
    reference_entity_id TEXT NOT NULL REFERENCES order_summaries (id),
    total_amount_with_tax BIGINT NOT NULL,
    balance BIGINT NOT NULL,
    status TEXT NOT NULL,
    currency_iso_code TEXT NOT NULL,
    created_date BIGINT NOT NULL,
    last_modified_date BIGINT NOT NULL,
    CHECK (balance >= 0)
);
CREATE INDEX invoices_reference ON invoices (reference_entity_id);

CREATE TABLE credit_memos (
    id TEXT PRIMARY KEY,
    reference_entity_id TEXT NOT NULL REFERENCES order_summaries (id),
    total_amount_with_tax BIGINT NOT NULL,
    balance BIGINT NOT NULL,
    status TEXT NOT NULL,
    currency_iso_code TEXT NOT NULL,
    created_date BIGINT NOT NULL,
    last_modified_date BIGINT NOT NULL,
    CHECK (balance >= 0)
);
CREATE INDEX credit_memos_reference ON credit_memos (reference_entity_id);

CREATE TABLE credit_memo_inv_applications (
    id TEXT PRIMARY KEY,
    credit_memo_id TEXT NOT NULL REFERENCES credit_memos (id),
    invoice_id TEXT NOT NULL REFERENCES invoices (id),
    amount BIGINT NOT NULL,
    type TEXT NOT NULL,
    applied_date BIGINT NOT NULL,
    background_operation_id TEXT,
    currency_iso_code TEXT NOT NULL,
    created_date BIGINT NOT NULL,
    last_modified_date BIGINT NOT NULL
);

CREATE TABLE background_operations (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    type TEXT NOT NULL,
    status TEXT NOT NULL,
    parent_key TEXT NOT NULL,
    -- internal: the validated request the job runs on
    payload TEXT NOT NULL,
    submitted_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT,
    error TEXT,
    retry_count BIGINT NOT NULL DEFAULT 0,
    retry_limit BIGINT NOT NULL,
    retry_backoff BIGINT NOT NULL,
    -- internal: 1 while an Error operation waits for its next retry
    retry_scheduled BIGINT NOT NULL DEFAULT 0,
    process_after BIGINT NOT NULL,
    timeout BIGINT NOT NULL,
    worker_uri TEXT,
    -- internal: the lease (fencing token, holder, expiry)
    lease_token BIGINT NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_expires_at BIGINT,
    -- internal: when the job fixed its refunds (a rescued run must not plan twice)
    planned_at BIGINT,
    created_date BIGINT NOT NULL,
    last_modified_date BIGINT NOT NULL
);
CREATE INDEX background_operations_claimable ON background_operations (status, process_after);
CREATE INDEX background_operations_parent ON background_operations (parent_key, submitted_at);

CREATE TABLE idempotency_keys (
    idempotency_key TEXT PRIMARY KEY,
    request_hash TEXT NOT NULL,
    background_operation_id TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE refunds (
    id TEXT PRIMARY KEY,
    background_operation_id TEXT NOT NULL REFERENCES background_operations (id),
    leg BIGINT NOT NULL,
    order_payment_summary_id TEXT NOT NULL REFERENCES order_payment_summaries (id),
    payment_id TEXT NOT NULL REFERENCES payments (id),
    payment_gateway_id TEXT NOT NULL REFERENCES payment_gateways (id),
    amount BIGINT NOT NULL,
    -- internal: the part of amount taken from the credit memo (returned to it on failure)
    credit_memo_id TEXT REFERENCES credit_memos (id),
    credit_memo_amount BIGINT NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    type TEXT NOT NULL,
    processing_mode TEXT NOT NULL,
    sf_result_code TEXT,
    gateway_ref_number TEXT,
    gateway_result_code TEXT,
    gateway_result_code_description TEXT,
    gateway_date BIGINT,
    client_context TEXT NOT NULL,
    -- internal: provider calls made with this refund's key, and reconciliation state
    attempts BIGINT NOT NULL DEFAULT 0,
    reconcile_state TEXT NOT NULL DEFAULT 'none',
    reconcile_since BIGINT,
    next_lookup_at BIGINT,
    lookups BIGINT NOT NULL DEFAULT 0,
    currency_iso_code TEXT NOT NULL,
    created_date BIGINT NOT NULL,
    last_modified_date BIGINT NOT NULL,
    UNIQUE (background_operation_id, leg),
    CHECK (amount > 0 AND credit_memo_amount >= 0 AND credit_memo_amount <= amount)
);
CREATE INDEX refunds_summary ON refunds (order_payment_summary_id);
CREATE INDEX refunds_reconcile ON refunds (reconcile_state, next_lookup_at);

CREATE TABLE refund_line_payments (
    id TEXT PRIMARY KEY,
    refund_id TEXT NOT NULL REFERENCES refunds (id),
    payment_id TEXT NOT NULL REFERENCES payments (id),
    amount BIGINT NOT NULL,
    type TEXT NOT NULL,
    applied_date BIGINT NOT NULL,
    currency_iso_code TEXT NOT NULL,
    created_date BIGINT NOT NULL,
    last_modified_date BIGINT NOT NULL,
    UNIQUE (refund_id, payment_id)
);

CREATE TABLE payment_gateway_logs (
    id TEXT PRIMARY KEY,
    interaction_type TEXT NOT NULL,
    interaction_status TEXT NOT NULL,
    sf_result_code TEXT,
    gateway_result_code TEXT,
    gateway_message TEXT,
    gateway_ref_number TEXT,
    gateway_date BIGINT,
    sf_ref_number TEXT,
    request TEXT,
    response TEXT,
    referenced_entity_id TEXT,
    order_payment_summary_id TEXT,
    payment_gateway_id TEXT,
    is_notification TEXT NOT NULL,
    duration_ms BIGINT,
    currency_iso_code TEXT NOT NULL,
    created_date BIGINT NOT NULL,
    last_modified_date BIGINT NOT NULL
);
CREATE INDEX payment_gateway_logs_entity ON payment_gateway_logs (referenced_entity_id);

CREATE TABLE process_exceptions (
    id TEXT PRIMARY KEY,
    category TEXT NOT NULL,
    exception_type TEXT NOT NULL,
    status TEXT NOT NULL,
    severity TEXT,
    priority TEXT NOT NULL,
    message TEXT NOT NULL,
    description TEXT,
    attached_to_id TEXT,
    order_summary_id TEXT NOT NULL REFERENCES order_summaries (id),
    background_operation_id TEXT,
    created_date BIGINT NOT NULL,
    last_modified_date BIGINT NOT NULL
);
CREATE INDEX process_exceptions_order ON process_exceptions (order_summary_id);
