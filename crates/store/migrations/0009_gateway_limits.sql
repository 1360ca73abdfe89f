-- Per-gateway limits on provider calls, honoured by each process: calls in flight at once
-- and calls started per second. NULL is no limit.
ALTER TABLE payment_gateways ADD COLUMN max_concurrent_requests BIGINT;
ALTER TABLE payment_gateways ADD COLUMN max_requests_per_second BIGINT;
