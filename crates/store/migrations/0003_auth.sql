-- API clients (OAuth client id + argon2 hash of the secret), users (argon2 hash of the
-- password), and access tokens, stored only as SHA-256 hashes.
CREATE TABLE api_clients (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    client_id TEXT NOT NULL UNIQUE,
    secret_hash TEXT NOT NULL,
    user_id TEXT NOT NULL,
    revoked_at BIGINT,
    created_date BIGINT NOT NULL
);

CREATE TABLE api_users (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_date BIGINT NOT NULL
);

CREATE TABLE access_tokens (
    token_hash TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    issued_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX access_tokens_client ON access_tokens (client_id);
