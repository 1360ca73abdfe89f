-- Per-gateway provider settings: HTTP timeouts, a result-code mapping that overrides the
-- adapter's, the merchant account (Adyen), and the name of the environment variable that
-- holds the webhook HMAC key. Secrets themselves are never stored.
ALTER TABLE payment_gateways ADD COLUMN timeout_ms BIGINT;
ALTER TABLE payment_gateways ADD COLUMN connect_timeout_ms BIGINT;
ALTER TABLE payment_gateways ADD COLUMN result_code_mapping TEXT;
ALTER TABLE payment_gateways ADD COLUMN merchant_account TEXT;
ALTER TABLE payment_gateways ADD COLUMN webhook_hmac_key_env TEXT;
