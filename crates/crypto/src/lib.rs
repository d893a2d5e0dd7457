//! Encryption at rest and key handling.
//!
//! Every secret Splice stores (client secrets, tokens, PKCE verifiers) goes through [`Cipher`]:
//! AES-256-GCM under the master key, a fresh 96-bit nonce per value, and the value's purpose as
//! associated data so a ciphertext cannot be moved to another column or row. This crate does
//! not decide what is secret; the storage layer does.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Format byte leading every ciphertext, so the scheme can change later.
const FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("master key must be 32 bytes encoded as base64")]
    BadKey,
    #[error("ciphertext is malformed or was not written under this master key")]
    Decrypt,
}

/// The 32-byte master key. Its `Debug` never shows the bytes.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl MasterKey {
    /// A new random key.
    pub fn generate() -> Self {
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        Self(key)
    }

    /// Decodes a standard base64 key of exactly 32 bytes (surrounding whitespace ignored).
    pub fn from_base64(encoded: &str) -> Result<Self, CryptoError> {
        let bytes = STANDARD
            .decode(encoded.trim())
            .map_err(|_| CryptoError::BadKey)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::BadKey)?;
        Ok(Self(key))
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

/// Authenticated encryption of stored secrets.
#[derive(Clone)]
pub struct Cipher {
    aead: Aes256Gcm,
}

impl Cipher {
    pub fn new(key: &MasterKey) -> Self {
        Self {
            aead: Aes256Gcm::new(&key.0.into()),
        }
    }

    /// Encrypts `plaintext`, bound to `context` (e.g. `"identity:idn_…:tokens"`).
    pub fn encrypt(&self, context: &str, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let payload = Payload {
            msg: plaintext,
            aad: context.as_bytes(),
        };
        // AES-GCM only fails for inputs beyond 64 GiB, far past anything Splice stores.
        let sealed = self
            .aead
            .encrypt(Nonce::from_slice(&nonce), payload)
            .unwrap_or_default();
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(FORMAT_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Decrypts what [`Cipher::encrypt`] produced for the same `context`.
    pub fn decrypt(&self, context: &str, ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let Some((&FORMAT_V1, rest)) = ciphertext.split_first() else {
            return Err(CryptoError::Decrypt);
        };
        if rest.len() < NONCE_LEN {
            return Err(CryptoError::Decrypt);
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let payload = Payload {
            msg: sealed,
            aad: context.as_bytes(),
        };
        self.aead
            .decrypt(Nonce::from_slice(nonce), payload)
            .map_err(|_| CryptoError::Decrypt)
    }
}

/// A random URL-safe token of `bytes` random bytes (used for `state`, keys, PKCE verifiers).
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// Hex SHA-256 of `value`: how API keys and `state` values are looked up without storing them.
pub fn sha256_hex(value: &str) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(value.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push(char::from(DIGITS[usize::from(byte >> 4)]));
        hex.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    hex
}

/// The PKCE S256 challenge of a verifier (RFC 7636 section 4.2).
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Compares two byte strings in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_context_binding() {
        let cipher = Cipher::new(&MasterKey::generate());
        let sealed = cipher.encrypt("identity:a", b"refresh-token-value");
        assert_eq!(
            cipher.decrypt("identity:a", &sealed).unwrap(),
            b"refresh-token-value"
        );
        assert_eq!(
            cipher.decrypt("identity:b", &sealed),
            Err(CryptoError::Decrypt)
        );
        assert!(!sealed.windows(7).any(|w| w == b"refresh"));
    }

    #[test]
    fn another_key_cannot_decrypt() {
        let sealed = Cipher::new(&MasterKey::generate()).encrypt("x", b"secret");
        let other = Cipher::new(&MasterKey::generate());
        assert_eq!(other.decrypt("x", &sealed), Err(CryptoError::Decrypt));
        assert_eq!(other.decrypt("x", &[]), Err(CryptoError::Decrypt));
        assert_eq!(other.decrypt("x", &[1, 2, 3]), Err(CryptoError::Decrypt));
    }

    #[test]
    fn master_key_parses_only_32_bytes() {
        let key = MasterKey::generate();
        assert!(MasterKey::from_base64(&key.to_base64()).is_ok());
        assert_eq!(
            MasterKey::from_base64("c2hvcnQ=").unwrap_err(),
            CryptoError::BadKey
        );
        assert_eq!(
            MasterKey::from_base64("not base64!").unwrap_err(),
            CryptoError::BadKey
        );
        assert_eq!(format!("{key:?}"), "MasterKey(***)");
    }

    #[test]
    fn pkce_matches_the_rfc_7636_vector() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(
            pkce_challenge(verifier),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn sha256_hex_matches_the_known_digest() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn random_tokens_are_url_safe_and_distinct() {
        let a = random_token(32);
        assert_eq!(a.len(), 43);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_ne!(a, random_token(32));
    }
}
