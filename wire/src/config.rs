//! What every program's TOML config loader shares: one error type naming the file, reading and
//! parsing with unknown keys rejected (the structs say `deny_unknown_fields`), and resolving
//! relative paths against the file's directory.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// Errors reading or checking a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// TOML syntax error or unknown key (the message carries line and column).
    #[error("invalid config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message.
        message: String,
    },
    /// A value out of range.
    #[error("invalid config {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Reads and parses `path`; `check` validates the result (its message becomes
/// [`ConfigError::Invalid`]).
pub fn load_toml<T: DeserializeOwned>(
    path: &Path,
    check: impl FnOnce(&mut T, &Path) -> Result<(), String>,
) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut value: T = toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    check(&mut value, base).map_err(|message| ConfigError::Invalid {
        path: path.to_path_buf(),
        message,
    })?;
    Ok(value)
}

/// Makes each relative path relative to `base`.
pub fn resolve_paths<'a>(base: &Path, paths: impl IntoIterator<Item = &'a mut PathBuf>) {
    for p in paths {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    }
}
