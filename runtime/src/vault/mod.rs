//! The vault: encryption of provider keys and the types that hold them.
//!
//! # Threat model
//!
//! The database may be copied by someone who does not hold the master key. To
//! them every provider key is AES-256-GCM ciphertext under a per-organisation
//! data key, itself wrapped by the master key. What they can still read: key
//! names, providers, base URLs, the short hint (`sk-...3xQa`), the fingerprint
//! (an HMAC under the data key, so it cannot be checked against a guessed
//! key), versions, states and dates, and all usage records.
//!
//! Every ciphertext starts with a format version byte and is bound by
//! associated data to its organisation, key id and key version, so a row
//! copied onto another key, version or organisation fails to open instead of
//! decrypting to the wrong key.
//!
//! # What is zeroized
//!
//! The master key, data keys and provider keys live in [`MasterKey`],
//! [`DataKey`] and [`ProviderSecret`]: no `Display`, no `Serialize`, a
//! redacted `Debug`, and memory overwritten on drop. A provider key is
//! decrypted for one provider request and dropped after it. Not covered: the
//! copies the operating system or the TLS library make while the request is
//! written to the socket, and the heap of a process that is core-dumped while
//! a request is in flight.

mod cipher;
pub mod guard;
mod master;

pub use cipher::{KeyBinding, open_data_key, open_secret, seal_secret, wrap_data_key};
pub use master::{MASTER_KEY_ENV, MASTER_KEY_FILE, MASTER_KEY_NEXT_FILE, MasterKey};

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

/// Errors of the vault. Decryption failures say deliberately little.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The master key does not open this data directory's data keys.
    #[error(
        "the master key does not open this data directory: set {MASTER_KEY_ENV} (or {MASTER_KEY_FILE}) \
         to the key `clawrun init` created for it"
    )]
    WrongMasterKey,
    /// No master key was found.
    #[error(
        "no master key: set {MASTER_KEY_ENV} to the base64 master key of this data directory, or \
         restore its {MASTER_KEY_FILE} file (`clawrun init` creates one for a new data directory)"
    )]
    MissingMasterKey,
    /// A master key was found but is not 32 bytes of base64.
    #[error("the master key in {0} is not base64 of exactly 32 bytes")]
    MalformedMasterKey(&'static str),
    /// The master key file can be read by other users.
    #[error("{path} is readable by other users: run `chmod 600 {path}`")]
    MasterKeyFilePermissions {
        /// Path of the file.
        path: String,
    },
    /// Reading or writing the master key file failed.
    #[error("master key file {path}: {source}")]
    Io {
        /// Path of the file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A stored ciphertext did not open: it was altered, or belongs elsewhere.
    #[error(
        "a stored provider key failed to decrypt: it was altered or does not belong to this key"
    )]
    Tampered,
}

/// A 256-bit data key that seals one organisation's provider keys.
pub struct DataKey(Zeroizing<[u8; 32]>);

impl DataKey {
    /// A fresh random data key.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::fill(&mut bytes[..]);
        Self(bytes)
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

/// A provider API key in plaintext.
///
/// Its only exposure is [`ProviderSecret::expose`], called where a provider
/// adapter builds the request header.
pub struct ProviderSecret(SecretString);

impl ProviderSecret {
    /// Wraps a key as entered. Surrounding whitespace (such as the newline of
    /// `echo KEY |`) is not part of a key and is dropped.
    pub fn new(key: String) -> Self {
        let key = Zeroizing::new(key);
        Self(SecretString::from(key.trim()))
    }

    /// The key's text, for the one place that writes it into a header.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// True when the key is empty.
    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }

    /// A short hint that lets a person recognise the key, like `sk-...3xQa`:
    /// up to three leading characters and the last four. Keys shorter than 16
    /// characters get `...` alone, since four characters would be too much of
    /// them.
    pub fn hint(&self) -> String {
        let key = self.expose();
        let chars: Vec<char> = key.chars().collect();
        if chars.len() < 16 {
            return "...".to_owned();
        }
        let head: String = chars[..3].iter().collect();
        let tail: String = chars[chars.len() - 4..].iter().collect();
        format!("{head}...{tail}")
    }

    /// A fingerprint of the key: HMAC-SHA-256 under the organisation's data
    /// key, first 16 hex digits. Equal keys of one organisation have equal
    /// fingerprints; without the data key it cannot be checked against a guess.
    pub fn fingerprint(&self, data_key: &DataKey) -> String {
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(data_key.bytes())
            .expect("HMAC takes keys of any length");
        mac.update(self.expose().as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..8])
    }
}

impl fmt::Debug for ProviderSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProviderSecret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_key() {
        let secret = ProviderSecret::new("sk-test-abcdefghijklmnop".into());
        assert_eq!(format!("{secret:?}"), "ProviderSecret(<redacted>)");
        assert_eq!(format!("{:?}", DataKey::generate()), "DataKey(<redacted>)");
    }

    #[test]
    fn hint_shows_prefix_and_last_four_only() {
        let secret = ProviderSecret::new("sk-proj-0123456789abcdef3xQa\n".into());
        assert_eq!(secret.hint(), "sk-...3xQa");
        assert_eq!(ProviderSecret::new("short-key".into()).hint(), "...");
    }

    #[test]
    fn fingerprint_depends_on_key_and_data_key() {
        let dk = DataKey::generate();
        let a = ProviderSecret::new("sk-aaaaaaaaaaaaaaaaaaaa".into());
        let b = ProviderSecret::new("sk-bbbbbbbbbbbbbbbbbbbb".into());
        assert_eq!(a.fingerprint(&dk), a.fingerprint(&dk));
        assert_ne!(a.fingerprint(&dk), b.fingerprint(&dk));
        assert_ne!(a.fingerprint(&dk), a.fingerprint(&DataKey::generate()));
        assert_eq!(a.fingerprint(&dk).len(), 16);
    }
}
