//! The agent's Ed25519 key that signs the baseline. The private key stays in the agent's
//! integrity dir (0600); the public key goes to the collector in the `baseline` event and may be
//! pinned in the config, so a baseline re-signed with another key is refused.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};

use super::entry::hex;

/// Key trouble.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file could not be read or written.
    #[error("cannot {action} signing key {path}: {source}")]
    Io {
        /// read / create.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The key file is not 64 hex digits.
    #[error("signing key {path} is not an Ed25519 key (64 hex digits)")]
    Malformed {
        /// The file.
        path: PathBuf,
    },
    /// No randomness.
    #[error("cannot draw a random key: {0}")]
    Random(String),
}

/// Parses a hex Ed25519 public key.
pub fn parse_public_key(s: &str) -> Result<VerifyingKey, String> {
    let bytes = unhex32(s.trim()).ok_or("not 64 hex digits")?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| format!("not an Ed25519 public key: {e}"))
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The agent's signing key.
#[derive(Debug)]
pub struct Key {
    signing: SigningKey,
}

impl Key {
    /// Loads the key at `path`, creating it (0600) when it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Key, KeyError> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let seed = unhex32(text.trim()).ok_or_else(|| KeyError::Malformed {
                    path: path.to_path_buf(),
                })?;
                Ok(Key {
                    signing: SigningKey::from_bytes(&seed),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut seed = [0u8; 32];
                getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
                let io = |source| KeyError::Io {
                    action: "create",
                    path: path.to_path_buf(),
                    source,
                };
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io)?;
                f.write_all(format!("{}\n", hex(&seed)).as_bytes())
                    .and_then(|()| f.sync_all())
                    .map_err(io)?;
                Ok(Key {
                    signing: SigningKey::from_bytes(&seed),
                })
            }
            Err(source) => Err(KeyError::Io {
                action: "read",
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// The public half.
    pub fn public(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// Signs `digest` (the blake3 of a baseline's body) in the baseline context.
    pub fn sign(&self, digest: &[u8; 32]) -> [u8; 64] {
        self.signing.sign(&message(digest)).to_bytes()
    }
}

/// What is signed: a context string and the body's blake3, so a signature over something else
/// can never pass for a baseline signature.
fn message(digest: &[u8; 32]) -> Vec<u8> {
    let mut m = b"palisade-baseline-v1\0".to_vec();
    m.extend_from_slice(digest);
    m
}

/// Checks a baseline signature.
pub fn verify(public: &VerifyingKey, digest: &[u8; 32], signature: &[u8; 64]) -> bool {
    public
        .verify(
            &message(digest),
            &ed25519_dalek::Signature::from_bytes(signature),
        )
        .is_ok()
}
