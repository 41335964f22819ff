//! Repository keys. An unencrypted repository keeps its id key in its config. An encrypted one
//! keeps the id key and the data key sealed under a master key that lives only in the operator's
//! key file, so the site holding the repository (the off-site operator) can store and verify the
//! bytes but cannot read them.

use std::path::Path;

use chacha20poly1305::aead::{Aead, AeadInPlace, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::error::{Error, Result};

/// The keys a repository's reader and writer need.
#[derive(Clone)]
pub struct Keys {
    /// Key of the keyed blake3 that names blobs.
    pub id_key: [u8; 32],
    /// Seals blobs and snapshots; `None` for an unencrypted repository.
    pub data: Option<XChaCha20Poly1305>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("encrypted", &self.data.is_some())
            .finish_non_exhaustive()
    }
}

/// 32 random bytes.
pub fn random32() -> Result<[u8; 32]> {
    let mut k = [0u8; 32];
    getrandom::fill(&mut k).map_err(|e| Error::Key(format!("no randomness: {e}")))?;
    Ok(k)
}

/// Reads a key file: 64 hex digits (whitespace around them ignored).
pub fn read_key_file(path: &Path) -> Result<[u8; 32]> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Key(format!("cannot read key file {}: {e}", path.display())))?;
    crate::chunk::parse_hex32(text.trim()).ok_or_else(|| {
        Error::Key(format!(
            "key file {} does not hold 64 hex digits",
            path.display()
        ))
    })
}

/// Creates a key file readable by its owner only; refuses to overwrite one.
pub fn create_key_file(path: &Path) -> Result<[u8; 32]> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let key = random32()?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::Key(format!("cannot create key file {}: {e}", path.display())))?;
    writeln!(f, "{}", crate::chunk::hex(&key))
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::Key(format!("cannot write key file {}: {e}", path.display())))?;
    Ok(key)
}

/// Seals `plain` with a fresh random nonce: `nonce[24] || ciphertext+tag`.
pub fn seal(cipher: &XChaCha20Poly1305, plain: &[u8]) -> Result<Vec<u8>> {
    let mut nonce = [0u8; 24];
    getrandom::fill(&mut nonce).map_err(|e| Error::Key(format!("no randomness: {e}")))?;
    let ct = cipher
        .encrypt(XNonce::from_slice(&nonce), plain)
        .map_err(|_| Error::Key("encryption failed".into()))?;
    let mut out = Vec::with_capacity(24 + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// [`seal`] into `out` (cleared first), encrypting in place: no allocation when `out` has the
/// room, one copy of `plain`. The same layout: nonce, ciphertext, tag.
pub fn seal_into(cipher: &XChaCha20Poly1305, plain: &[u8], out: &mut Vec<u8>) -> Result<()> {
    let mut nonce = [0u8; 24];
    getrandom::fill(&mut nonce).map_err(|e| Error::Key(format!("no randomness: {e}")))?;
    out.clear();
    out.reserve(24 + plain.len() + 16);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plain);
    let tag = cipher
        .encrypt_in_place_detached(XNonce::from_slice(&nonce), b"", &mut out[24..])
        .map_err(|_| Error::Key("encryption failed".into()))?;
    out.extend_from_slice(&tag);
    Ok(())
}

/// Opens what [`seal`] made; `None` when the key is wrong or the bytes were altered.
pub fn open(cipher: &XChaCha20Poly1305, sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < 24 + 16 {
        return None;
    }
    let (nonce, ct) = sealed.split_at(24);
    cipher.decrypt(XNonce::from_slice(nonce), ct).ok()
}

/// A cipher from a 32-byte key.
pub fn cipher(key: &[u8; 32]) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(key.into())
}

/// Seals the id and data keys under `master`; returns the wrapped bytes.
pub fn wrap(master: &[u8; 32], id_key: &[u8; 32], data_key: &[u8; 32]) -> Result<Vec<u8>> {
    let mut both = [0u8; 64];
    both[..32].copy_from_slice(id_key);
    both[32..].copy_from_slice(data_key);
    seal(&cipher(master), &both)
}

/// Opens wrapped keys with `master`.
pub fn unwrap(master: &[u8; 32], wrapped: &[u8], key_file: &Path) -> Result<Keys> {
    let both = open(&cipher(master), wrapped).ok_or_else(|| {
        Error::Key(format!(
            "key file {} does not open this repository (wrong key, or the config was altered)",
            key_file.display()
        ))
    })?;
    let mut id_key = [0u8; 32];
    let mut data_key = [0u8; 32];
    if both.len() != 64 {
        return Err(Error::Key("wrapped keys have the wrong length".into()));
    }
    id_key.copy_from_slice(&both[..32]);
    data_key.copy_from_slice(&both[32..]);
    Ok(Keys {
        id_key,
        data: Some(cipher(&data_key)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_in_place_opens_like_sealed() {
        let c = cipher(&[9; 32]);
        let mut out = vec![1, 2, 3];
        seal_into(&c, b"frame bytes", &mut out).unwrap();
        assert_eq!(out.len(), 24 + 11 + 16);
        assert_eq!(open(&c, &out).unwrap(), b"frame bytes");
        assert_eq!(open(&c, &seal(&c, b"").unwrap()).unwrap(), b"");
        out[30] ^= 1;
        assert!(open(&c, &out).is_none());
    }
}
