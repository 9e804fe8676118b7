-- How an `openai-compatible` key's server is called: the path after the
-- base URL (with an optional query such as Azure's api-version), the header
-- that carries the key, and the word before the key in it. NULL means the
-- OpenAI default (`/chat/completions`, `authorization`, `Bearer`); other
-- provider kinds leave them NULL.
ALTER TABLE provider_keys ADD COLUMN api_path TEXT;
ALTER TABLE provider_keys ADD COLUMN auth_header TEXT;
ALTER TABLE provider_keys ADD COLUMN auth_scheme TEXT;
