//! AES-256-GCM sealing with a versioned format and bound associated data.
//!
//! Format of every ciphertext: one version byte ([`FORMAT_V1`]), a 96-bit
//! random nonce, then the GCM ciphertext and 128-bit tag. A fresh nonce is
//! drawn from the operating system's generator for every encryption; with
//! random nonces one key may seal about 2^32 messages, far more than the keys
//! of one organisation will ever be rotated.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use zeroize::Zeroizing;

use super::{DataKey, MasterKey, ProviderSecret, VaultError};

/// The only ciphertext format so far.
const FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// What a provider key's ciphertext is bound to: opening it under any other
/// binding fails.
#[derive(Debug, Clone, Copy)]
pub struct KeyBinding<'a> {
    /// Organisation id.
    pub org_id: &'a str,
    /// Provider key id.
    pub key_id: &'a str,
    /// Version of the key, incremented by every rotation.
    pub version: i64,
}

impl KeyBinding<'_> {
    fn associated_data(&self) -> Vec<u8> {
        // NUL separators: ids never contain NUL, so no two bindings encode
        // to the same bytes.
        format!(
            "clawrun/provider-key/v1\0{}\0{}\0{}",
            self.org_id, self.key_id, self.version
        )
        .into_bytes()
    }
}

fn data_key_associated_data(org_id: &str) -> Vec<u8> {
    format!("clawrun/data-key/v1\0{org_id}").into_bytes()
}

fn seal(key: &[u8; 32], plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    let cipher = Aes256Gcm::new(key.into());
    let mut nonce = [0u8; NONCE_LEN];
    rand::fill(&mut nonce);
    let sealed = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("AES-GCM encryption of a small buffer cannot fail");
    let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
    out.push(FORMAT_V1);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    out
}

fn open(key: &[u8; 32], blob: &[u8], aad: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if blob.len() < 1 + NONCE_LEN + TAG_LEN || blob[0] != FORMAT_V1 {
        return None;
    }
    let (nonce, sealed) = blob[1..].split_at(NONCE_LEN);
    let cipher = Aes256Gcm::new(key.into());
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad })
        .ok()
        .map(Zeroizing::new)
}

/// Wraps an organisation's data key under the master key.
pub fn wrap_data_key(master: &MasterKey, org_id: &str, data_key: &DataKey) -> Vec<u8> {
    seal(
        master.bytes(),
        data_key.bytes(),
        &data_key_associated_data(org_id),
    )
}

/// Unwraps an organisation's data key.
///
/// # Errors
///
/// [`VaultError::WrongMasterKey`] when the master key (or the organisation
/// id) does not match the one the data key was wrapped with, or the row was
/// altered.
pub fn open_data_key(master: &MasterKey, org_id: &str, blob: &[u8]) -> Result<DataKey, VaultError> {
    let plain = open(master.bytes(), blob, &data_key_associated_data(org_id))
        .ok_or(VaultError::WrongMasterKey)?;
    let bytes: [u8; 32] = plain[..]
        .try_into()
        .map_err(|_| VaultError::WrongMasterKey)?;
    Ok(DataKey(Zeroizing::new(bytes)))
}

/// Seals a provider key under its organisation's data key.
pub fn seal_secret(
    data_key: &DataKey,
    binding: KeyBinding<'_>,
    secret: &ProviderSecret,
) -> Vec<u8> {
    seal(
        data_key.bytes(),
        secret.expose().as_bytes(),
        &binding.associated_data(),
    )
}

/// Opens a provider key sealed by [`seal_secret`] under the same binding.
///
/// # Errors
///
/// [`VaultError::Tampered`] when the ciphertext, its binding or the data key
/// do not match.
pub fn open_secret(
    data_key: &DataKey,
    binding: KeyBinding<'_>,
    blob: &[u8],
) -> Result<ProviderSecret, VaultError> {
    let plain =
        open(data_key.bytes(), blob, &binding.associated_data()).ok_or(VaultError::Tampered)?;
    let text = std::str::from_utf8(&plain).map_err(|_| VaultError::Tampered)?;
    Ok(ProviderSecret::new(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding() -> KeyBinding<'static> {
        KeyBinding {
            org_id: "org_1",
            key_id: "key_1",
            version: 1,
        }
    }

    #[test]
    fn seal_then_open_round_trips() {
        let dk = DataKey::generate();
        let blob = seal_secret(&dk, binding(), &ProviderSecret::new("sk-live-123".into()));
        let opened = open_secret(&dk, binding(), &blob).expect("opens");
        assert_eq!(opened.expose(), "sk-live-123");
        assert!(!blob.windows(11).any(|w| w == b"sk-live-123"));
    }

    #[test]
    fn fresh_nonce_per_seal() {
        let dk = DataKey::generate();
        let secret = ProviderSecret::new("sk-live-123".into());
        assert_ne!(
            seal_secret(&dk, binding(), &secret),
            seal_secret(&dk, binding(), &secret)
        );
    }

    #[test]
    fn other_binding_fails_to_open() {
        let dk = DataKey::generate();
        let blob = seal_secret(&dk, binding(), &ProviderSecret::new("sk".into()));
        for other in [
            KeyBinding {
                org_id: "org_2",
                ..binding()
            },
            KeyBinding {
                key_id: "key_2",
                ..binding()
            },
            KeyBinding {
                version: 2,
                ..binding()
            },
        ] {
            assert!(matches!(
                open_secret(&dk, other, &blob),
                Err(VaultError::Tampered)
            ));
        }
    }

    #[test]
    fn any_flipped_byte_fails_to_open() {
        let dk = DataKey::generate();
        let blob = seal_secret(&dk, binding(), &ProviderSecret::new("sk-live-123".into()));
        for i in 0..blob.len() {
            let mut bad = blob.clone();
            bad[i] ^= 0x01;
            assert!(
                open_secret(&dk, binding(), &bad).is_err(),
                "byte {i} flipped still opened"
            );
        }
        assert!(open_secret(&dk, binding(), &blob[..blob.len() - 1]).is_err());
    }

    #[test]
    fn wrong_master_key_is_reported_as_such() {
        let master = MasterKey::generate();
        let dk = DataKey::generate();
        let wrapped = wrap_data_key(&master, "org_1", &dk);
        assert!(open_data_key(&master, "org_1", &wrapped).is_ok());
        assert!(matches!(
            open_data_key(&MasterKey::generate(), "org_1", &wrapped),
            Err(VaultError::WrongMasterKey)
        ));
        assert!(open_data_key(&master, "org_2", &wrapped).is_err());
    }

    /// Test case 16 of the GCM specification (McGrew and Viega), with a
    /// 256-bit key, associated data and a 96-bit nonce, through the same
    /// `open` used for stored keys.
    #[test]
    fn gcm_spec_test_vector_16() {
        let key: [u8; 32] =
            hex::decode("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308")
                .expect("hex")
                .try_into()
                .expect("32 bytes");
        let nonce = hex::decode("cafebabefacedbaddecaf888").expect("hex");
        let plaintext = hex::decode(
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
             1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
        )
        .expect("hex");
        let aad = hex::decode("feedfacedeadbeeffeedfacedeadbeefabaddad2").expect("hex");
        let expected = hex::decode(
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
             8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662\
             76fc6ece0f4e1768cddf8853bb2d551b",
        )
        .expect("hex");

        let mut blob = vec![FORMAT_V1];
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&expected);
        let opened = open(&key, &blob, &aad).expect("the published vector opens");
        assert_eq!(&opened[..], &plaintext[..]);

        let cipher = Aes256Gcm::new((&key).into());
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &plaintext,
                    aad: &aad,
                },
            )
            .expect("encrypts");
        assert_eq!(sealed, expected);
    }
}
