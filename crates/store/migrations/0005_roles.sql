-- Administrative principals: only an admin client or user may create or change payment
-- gateways. Every principal that existed before stays a standard one.
ALTER TABLE api_clients ADD COLUMN role TEXT NOT NULL DEFAULT 'standard' CHECK (role IN ('standard', 'admin'));
ALTER TABLE api_users ADD COLUMN role TEXT NOT NULL DEFAULT 'standard' CHECK (role IN ('standard', 'admin'));
