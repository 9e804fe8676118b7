//! Provider keys: added encrypted, rotated, revoked.

use super::*;

impl Service {
    /// Stores a new provider key, encrypted, and returns its row.
    ///
    /// # Errors
    ///
    /// When the name is taken, the secret is empty or the base URL unsafe.
    pub fn keys_add(
        &self,
        name: &str,
        kind: ProviderKind,
        base_url: Option<&str>,
        secret: ProviderSecret,
    ) -> Result<KeyRow, ServiceError> {
        self.keys_add_configured(name, kind, base_url, CompatibleConfig::default(), secret)
    }

    /// Stores a new provider key like [`Service::keys_add`], with the path
    /// and auth header an `openai-compatible` server wants.
    ///
    /// # Errors
    ///
    /// As [`Service::keys_add`]; also when `compatible` is set for another
    /// kind, is invalid, or an `openai-compatible` key has no base URL.
    pub fn keys_add_configured(
        &self,
        name: &str,
        kind: ProviderKind,
        base_url: Option<&str>,
        compatible: CompatibleConfig,
        secret: ProviderSecret,
    ) -> Result<KeyRow, ServiceError> {
        check_secret(&secret)?;
        // The fields beside the key are where a misplaced paste lands: a
        // key there must be neither stored as a name nor quoted back.
        let key = secret.expose();
        let misplaced = |field: &str| key.len() >= 8 && field.contains(key);
        if misplaced(name) || base_url.is_some_and(misplaced) {
            return Err(ServiceError::Invalid(
                "the API key was pasted into the name or base URL field: put it in the secret \
                 only"
                    .into(),
            ));
        }
        if let Err(e) = check_name("key", name) {
            return Err(match e {
                ServiceError::Invalid(m) if !m.contains(name) => ServiceError::Invalid(m),
                _ => ServiceError::Invalid(
                    "invalid key name: use 1 to 64 letters, digits, `-`, `_` or `.`, not \
                     starting with `.`"
                        .into(),
                ),
            });
        }
        if kind != ProviderKind::OpenAiCompatible && compatible != CompatibleConfig::default() {
            return Err(ServiceError::Invalid(format!(
                "--path, --auth-header and --auth-scheme are for `openai-compatible` keys; \
                 `{kind}` keys use their provider's own"
            )));
        }
        compatible.validate().map_err(ServiceError::Invalid)?;
        let base_url = base_url.or(kind.default_base_url()).ok_or_else(|| {
            ServiceError::Invalid(format!(
                "`{kind}` keys need --base-url: the server's URL as its OpenAI SDK setting takes it, \
                 like `http://localhost:11434/v1` for Ollama"
            ))
        })?;
        let base_url = providers::validate_base_url(base_url).map_err(|e| match e {
            providers::BaseUrlError::Invalid(_) => ServiceError::Invalid(
                "the base URL is not a valid URL: give it as the provider's SDK takes it, like \
                 https://api.openai.com/v1"
                    .into(),
            ),
            other => ServiceError::Invalid(other.to_string()),
        })?;
        let data_key = self.data_key()?;
        let id = new_id("key");
        let binding = KeyBinding {
            org_id: &self.org.id,
            key_id: &id,
            version: 1,
        };
        let (scan_len, scan_hash) = vault::guard::scan_hash(&data_key, &secret);
        let row = KeyRow {
            scan_len: scan_len as i64,
            scan_hash: scan_hash as i64,
            ciphertext: vault::seal_secret(&data_key, binding, &secret),
            fingerprint: secret.fingerprint(&data_key),
            hint: secret.hint(),
            id,
            org_id: self.org.id.clone(),
            name: name.into(),
            provider: kind.as_str().into(),
            base_url: base_url.to_string().trim_end_matches('/').to_owned(),
            version: 1,
            state: KeyState::Active,
            created_at_ms: now_ms(),
            rotated_at_ms: None,
            revoked_at_ms: None,
            api_path: compatible.path,
            auth_header: compatible.auth_header,
            auth_scheme: compatible.auth_scheme,
        };
        self.db.key_insert(&row, &self.audit("key.added", &row))?;
        tracing::info!(key_id = %row.id, provider = %row.provider, "key added");
        Ok(row)
    }

    /// The organisation's keys.
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub fn keys_list(&self) -> Result<Vec<KeyRow>, ServiceError> {
        Ok(self.db.keys(&self.org.id)?)
    }

    /// Stores a new version of a key; the next call of every claw using it
    /// uses the new version. The old version's ciphertext is overwritten.
    ///
    /// # Errors
    ///
    /// When the key does not exist, is revoked, or the secret is empty.
    pub fn keys_rotate(&self, name: &str, secret: ProviderSecret) -> Result<KeyRow, ServiceError> {
        let mut row = self.key(name)?;
        if row.state == KeyState::Revoked {
            return Err(ServiceError::KeyRevoked(name.into()));
        }
        check_secret(&secret)?;
        let data_key = self.data_key()?;
        row.version += 1;
        let binding = KeyBinding {
            org_id: &self.org.id,
            key_id: &row.id,
            version: row.version,
        };
        row.ciphertext = vault::seal_secret(&data_key, binding, &secret);
        row.fingerprint = secret.fingerprint(&data_key);
        row.hint = secret.hint();
        let (scan_len, scan_hash) = vault::guard::scan_hash(&data_key, &secret);
        row.scan_len = scan_len as i64;
        row.scan_hash = scan_hash as i64;
        row.rotated_at_ms = Some(now_ms());
        if !self.db.key_rotate(&row, &self.audit("key.rotated", &row))? {
            return Err(ServiceError::Invalid(format!(
                "key `{name}` was revoked or rotated by someone else meanwhile: check `clawrun keys list`"
            )));
        }
        tracing::info!(key_id = %row.id, version = row.version, "key rotated");
        Ok(row)
    }

    /// Revokes a key: no provider request with it starts after this returns.
    ///
    /// # Errors
    ///
    /// When the key does not exist.
    pub fn keys_revoke(&self, name: &str) -> Result<KeyRow, ServiceError> {
        let row = self.key(name)?;
        self.llm
            .revoke(&row.id, now_ms(), &self.audit("key.revoked", &row))?;
        let row = self.key(name)?;
        tracing::info!(key_id = %row.id, "key revoked");
        Ok(row)
    }

    fn audit(&self, action: &str, key: &KeyRow) -> AuditRecord {
        AuditRecord {
            at_ms: now_ms(),
            org_id: Some(self.org.id.clone()),
            actor: self.actor.clone(),
            action: action.into(),
            key_id: Some(key.id.clone()),
            key_version: Some(key.version),
            claw_id: None,
            outcome: "ok".into(),
            subject: None,
        }
    }
}
