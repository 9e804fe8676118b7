//! API tokens: `clawrun_tok_<16 hex>_<43 base64url>`.
//!
//! The id part finds the row; only the SHA-256 of the secret part is stored,
//! and it is compared in constant time. 256 random bits make a slow hash
//! pointless: nobody can guess their way to a preimage.

use std::fmt;

use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::{Service, ServiceError, new_id};
use crate::db::{AuditRecord, TokenRow};
use crate::metering::now_ms;

const PREFIX: &str = "clawrun_";

/// A token just created: its row, and its text, shown this once.
pub struct NewToken {
    /// The stored row (no secret).
    pub row: TokenRow,
    text: Zeroizing<String>,
}

impl NewToken {
    /// The whole token, for the `Authorization: Bearer` header.
    pub fn expose(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for NewToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewToken")
            .field("id", &self.row.id)
            .field("text", &"[redacted]")
            .finish()
    }
}

/// Splits a token into its id and secret parts; `None` when it is not
/// shaped like one.
pub(super) fn parse(text: &str) -> Option<(&str, &str)> {
    let rest = text.strip_prefix(PREFIX)?;
    // The id itself holds one underscore (`tok_` + hex).
    let split = rest.match_indices('_').nth(1)?.0;
    let (id, secret) = (&rest[..split], &rest[split + 1..]);
    (id.starts_with("tok_") && id.len() == 20 && !secret.is_empty()).then_some((id, secret))
}

fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Whether `secret` hashes to `stored`, in time independent of where they
/// differ.
pub(super) fn matches(secret: &str, stored: &[u8]) -> bool {
    bool::from(hash(secret).ct_eq(stored))
}

impl Service {
    /// Creates an API token of this organisation; its text is returned once
    /// and never stored.
    ///
    /// # Errors
    ///
    /// When the name is invalid or the database fails.
    pub fn tokens_create(&self, name: &str) -> Result<NewToken, ServiceError> {
        super::check_name("token", name)?;
        let mut secret = [0u8; 32];
        rand::fill(&mut secret);
        let secret =
            Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret));
        let row = TokenRow {
            id: new_id("tok"),
            org_id: self.org.id.clone(),
            name: name.into(),
            secret_hash: hash(&secret),
            created_at_ms: now_ms(),
            revoked_at_ms: None,
        };
        let text = Zeroizing::new(format!("{PREFIX}{}_{}", row.id, secret.as_str()));
        self.db
            .token_insert(&row, &self.token_audit("token.created", &row.id))?;
        Ok(NewToken { row, text })
    }

    /// The organisation's tokens (never their secrets).
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub fn tokens_list(&self) -> Result<Vec<TokenRow>, ServiceError> {
        Ok(self.db.tokens(&self.org.id)?)
    }

    /// Revokes a token: the next request bearing it is refused.
    ///
    /// # Errors
    ///
    /// When the organisation has no active token of that id.
    pub fn tokens_revoke(&self, id: &str) -> Result<(), ServiceError> {
        let audit = self.token_audit("token.revoked", id);
        if self.db.token_revoke(&self.org.id, id, now_ms(), &audit)? {
            Ok(())
        } else {
            Err(ServiceError::UnknownToken(id.into()))
        }
    }

    fn token_audit(&self, action: &str, id: &str) -> AuditRecord {
        AuditRecord {
            at_ms: now_ms(),
            org_id: Some(self.org.id.clone()),
            actor: self.actor.clone(),
            action: action.into(),
            outcome: "ok".into(),
            subject: Some(id.into()),
            ..AuditRecord::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_splits_id_and_secret() {
        let text = "clawrun_tok_0123456789abcdef_c2VjcmV0_with-dash";
        assert_eq!(
            parse(text),
            Some(("tok_0123456789abcdef", "c2VjcmV0_with-dash"))
        );
        assert_eq!(parse("tok_0123456789abcdef_x"), None);
        assert_eq!(parse("clawrun_tok_0123_x"), None);
        assert_eq!(parse("clawrun_tok_0123456789abcdef_"), None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn only_the_right_secret_matches() {
        let stored = hash("right");
        assert!(matches("right", &stored));
        assert!(!matches("wrong", &stored));
        assert!(!matches("", &stored));
    }
}
