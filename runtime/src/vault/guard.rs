//! The leak guard: finds an organisation's stored keys inside text a guest
//! sends, without holding any key in plaintext.
//!
//! For each key the database keeps its length and a Rabin-Karp rolling hash
//! of its bytes under a secret base derived from the organisation's data
//! key. A scan rolls a window of each stored length over the text (linear in
//! the text's length, once per distinct key length) and confirms every hash
//! hit by comparing the window's HMAC fingerprint with the key's. A match is
//! therefore exact, and nothing about a key can be learnt from the stored
//! hash without the data key.

use hmac::{Hmac, Mac};

use super::{DataKey, ProviderSecret};

/// What the guard knows of one stored key.
#[derive(Debug, Clone)]
pub struct ScanEntry {
    /// Key id.
    pub key_id: String,
    /// Length of the key in bytes.
    pub len: usize,
    /// Rolling hash of the key under the organisation's base.
    pub hash: u64,
    /// HMAC fingerprint of the key, as [`ProviderSecret::fingerprint`].
    pub fingerprint: String,
}

/// The rolling-hash base of an organisation, derived from its data key.
///
/// Hashes are polynomials in this base modulo 2^64 (wrapping arithmetic,
/// an odd base so it is invertible). Such hashes collide for crafted pairs
/// of strings, but a guest that does not know the base cannot aim a
/// collision at a stored key, and every hit is confirmed by HMAC anyway: a
/// collision costs one HMAC, never a false match.
fn base(data_key: &DataKey) -> u64 {
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(data_key.bytes())
        .expect("HMAC takes keys of any length");
    mac.update(b"clawrun/leak-guard-base/v1");
    let bytes = mac.finalize().into_bytes();
    u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) | 1
}

fn hash_bytes(base: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(0u64, |h, &b| {
        h.wrapping_mul(base).wrapping_add(u64::from(b))
    })
}

/// The length and rolling hash to store with `secret`.
pub fn scan_hash(data_key: &DataKey, secret: &ProviderSecret) -> (usize, u64) {
    let bytes = secret.expose().as_bytes();
    (bytes.len(), hash_bytes(base(data_key), bytes))
}

/// Returns the id of the first stored key found verbatim in any of `texts`.
pub fn find_key<'a>(
    data_key: &DataKey,
    entries: &'a [ScanEntry],
    texts: &[&str],
) -> Option<&'a ScanEntry> {
    if entries.is_empty() {
        return None;
    }
    let base = base(data_key);
    let mut lengths: Vec<usize> = entries.iter().map(|e| e.len).filter(|&l| l > 0).collect();
    lengths.sort_unstable();
    lengths.dedup();
    let by_length: Vec<(usize, Vec<&ScanEntry>)> = lengths
        .iter()
        .map(|&len| (len, entries.iter().filter(|e| e.len == len).collect()))
        .collect();
    for text in texts {
        let bytes = text.as_bytes();
        for (len, candidates) in &by_length {
            let len = *len;
            if bytes.len() < len {
                continue;
            }
            // base^(len-1), to remove the byte leaving the window.
            let top = (1..len).fold(1u64, |p, _| p.wrapping_mul(base));
            let mut h = hash_bytes(base, &bytes[..len]);
            for start in 0..=bytes.len() - len {
                if start > 0 {
                    let out = u64::from(bytes[start - 1]);
                    let inn = u64::from(bytes[start + len - 1]);
                    h = h
                        .wrapping_sub(out.wrapping_mul(top))
                        .wrapping_mul(base)
                        .wrapping_add(inn);
                }
                if let Some(hit) = candidates.iter().find(|e| e.hash == h) {
                    let window = &bytes[start..start + len];
                    if fingerprint_bytes(data_key, window) == hit.fingerprint {
                        return Some(hit);
                    }
                }
            }
        }
    }
    None
}

fn fingerprint_bytes(data_key: &DataKey, bytes: &[u8]) -> String {
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(data_key.bytes())
        .expect("HMAC takes keys of any length");
    mac.update(bytes);
    hex::encode(&mac.finalize().into_bytes()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(dk: &DataKey, id: &str, key: &str) -> ScanEntry {
        let secret = ProviderSecret::new(key.into());
        let (len, hash) = scan_hash(dk, &secret);
        ScanEntry {
            key_id: id.into(),
            len,
            hash,
            fingerprint: secret.fingerprint(dk),
        }
    }

    #[test]
    fn finds_a_stored_key_anywhere_in_the_text() {
        let dk = DataKey::generate();
        let entries = vec![
            entry(&dk, "a", "sk-proj-abcdefghijklmnopqrstuvwxyz012345"),
            entry(&dk, "b", "sk-ant-api03-ZZZZYYYYWWWWVVVV"),
        ];
        let texts = [
            "nothing here",
            "please forward sk-ant-api03-ZZZZYYYYWWWWVVVV to me",
        ];
        assert_eq!(
            find_key(&dk, &entries, &texts).map(|e| e.key_id.as_str()),
            Some("b")
        );
        let at_start = ["sk-proj-abcdefghijklmnopqrstuvwxyz012345"];
        assert_eq!(
            find_key(&dk, &entries, &at_start).map(|e| e.key_id.as_str()),
            Some("a")
        );
    }

    #[test]
    fn near_misses_do_not_match() {
        let dk = DataKey::generate();
        let entries = vec![entry(&dk, "a", "sk-proj-abcdefghijklmnopqrstuvwxyz012345")];
        let texts = [
            "sk-proj-abcdefghijklmnopqrstuvwxyz01234",
            "sk-proj-abcdefghijklmnopqrstuvwxyz012346",
            "SK-PROJ-ABCDEFGHIJKLMNOPQRSTUVWXYZ012345",
            "",
        ];
        assert!(find_key(&dk, &entries, &texts).is_none());
    }

    #[test]
    fn the_rolling_hash_equals_the_direct_hash_at_every_offset() {
        let dk = DataKey::generate();
        let base = base(&dk);
        let text = b"a rolling window over some text, with bytes \xff\x00 too";
        let len = 7;
        let top = (1..len).fold(1u64, |p, _| p.wrapping_mul(base));
        let mut h = hash_bytes(base, &text[..len]);
        for start in 1..=text.len() - len {
            let out = u64::from(text[start - 1]);
            let inn = u64::from(text[start + len - 1]);
            h = h
                .wrapping_sub(out.wrapping_mul(top))
                .wrapping_mul(base)
                .wrapping_add(inn);
            assert_eq!(
                h,
                hash_bytes(base, &text[start..start + len]),
                "offset {start}"
            );
        }
    }

    #[test]
    fn the_stored_hash_depends_on_the_data_key() {
        let secret = ProviderSecret::new("sk-same-key-0000000000".into());
        assert_ne!(
            scan_hash(&DataKey::generate(), &secret),
            scan_hash(&DataKey::generate(), &secret)
        );
    }
}
