//! The master key: where it comes from and how `clawrun init` creates it.

use std::fmt;
use std::io::Write;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use zeroize::Zeroizing;

use super::VaultError;

/// Environment variable holding the master key (base64 of 32 bytes). It takes
/// precedence over the file.
pub const MASTER_KEY_ENV: &str = "CLAWRUN_MASTER_KEY";

/// Name of the master key file in the data directory (mode 0600).
pub const MASTER_KEY_FILE: &str = "master.key";

/// Where `vault rotate-master` writes the new key before the database
/// switches to it; renamed over [`MASTER_KEY_FILE`] once it has.
pub const MASTER_KEY_NEXT_FILE: &str = "master.key.next";

/// The 256-bit key that wraps every organisation's data key.
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl MasterKey {
    /// A fresh random master key.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::fill(&mut bytes[..]);
        Self(bytes)
    }

    /// Decodes a master key from its base64 text.
    ///
    /// # Errors
    ///
    /// [`VaultError::MalformedMasterKey`] unless the text is base64 of
    /// exactly 32 bytes; `source` names where it came from in the message.
    pub fn from_base64(text: &str, source: &'static str) -> Result<Self, VaultError> {
        let decoded = Zeroizing::new(
            BASE64
                .decode(text.trim())
                .map_err(|_| VaultError::MalformedMasterKey(source))?,
        );
        let bytes: [u8; 32] = decoded[..]
            .try_into()
            .map_err(|_| VaultError::MalformedMasterKey(source))?;
        Ok(Self(Zeroizing::new(bytes)))
    }

    /// Loads the master key file at `path` (mode 0600 required).
    ///
    /// # Errors
    ///
    /// As [`MasterKey::load`].
    pub fn load_file(path: &Path) -> Result<Self, VaultError> {
        let io = |source| VaultError::Io {
            path: path.display().to_string(),
            source,
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => Zeroizing::new(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(VaultError::MissingMasterKey);
            }
            Err(e) => return Err(io(e)),
        };
        check_owner_only(path)?;
        Self::from_base64(&text, MASTER_KEY_FILE)
    }

    /// Loads the master key from [`MASTER_KEY_ENV`], or else from
    /// [`MASTER_KEY_FILE`] in `data_dir`.
    ///
    /// # Errors
    ///
    /// When neither exists, when the key is malformed, or when the file can
    /// be read by users other than its owner.
    pub fn load(data_dir: &Path) -> Result<Self, VaultError> {
        if let Ok(text) = std::env::var(MASTER_KEY_ENV) {
            let text = Zeroizing::new(text);
            return Self::from_base64(&text, MASTER_KEY_ENV);
        }
        Self::load_file(&data_dir.join(MASTER_KEY_FILE))
    }

    /// True when the master key comes from [`MASTER_KEY_ENV`].
    pub fn from_env() -> bool {
        std::env::var_os(MASTER_KEY_ENV).is_some()
    }

    /// Writes this key to [`MASTER_KEY_FILE`] in `data_dir`, created with
    /// mode 0600; an existing file is never overwritten.
    ///
    /// # Errors
    ///
    /// When the file exists or cannot be written.
    pub fn write_new_file(&self, data_dir: &Path) -> Result<(), VaultError> {
        self.write_new(&data_dir.join(MASTER_KEY_FILE))
    }

    /// Writes this key to `path`, created with mode 0600 and synced to disk;
    /// an existing file is never overwritten.
    ///
    /// # Errors
    ///
    /// When the file exists or cannot be written.
    pub fn write_new(&self, path: &Path) -> Result<(), VaultError> {
        let io = |source| VaultError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(io)?;
        let text = Zeroizing::new(format!("{}\n", BASE64.encode(&self.0[..])));
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

#[cfg(unix)]
fn check_owner_only(path: &Path) -> Result<(), VaultError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|source| VaultError::Io {
            path: path.display().to_string(),
            source,
        })?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(VaultError::MasterKeyFilePermissions {
            path: path.display().to_string(),
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_owner_only(_path: &Path) -> Result<(), VaultError> {
    Ok(())
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_is_created_owner_only_and_loads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = MasterKey::generate();
        key.write_new_file(dir.path()).expect("writes");
        assert!(key.write_new_file(dir.path()).is_err(), "never overwrites");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(MASTER_KEY_FILE))
                .expect("exists")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let text = std::fs::read_to_string(dir.path().join(MASTER_KEY_FILE)).expect("reads");
        let loaded = MasterKey::from_base64(&text, MASTER_KEY_FILE).expect("decodes");
        assert_eq!(loaded.bytes(), key.bytes());
    }

    #[test]
    fn malformed_keys_are_refused() {
        assert!(MasterKey::from_base64("not base64!", MASTER_KEY_ENV).is_err());
        assert!(MasterKey::from_base64(&BASE64.encode([0u8; 16]), MASTER_KEY_ENV).is_err());
    }
}
