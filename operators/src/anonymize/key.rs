//! The secret key of the keyed pseudonyms.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use thiserror::Error;

/// HMAC-SHA256.
type HmacSha256 = Hmac<Sha256>;

/// The secret key of the keyed pseudonyms and date shifts (HMAC-SHA256).
///
/// Whoever holds the key can recompute pseudonyms from source ids, so it is never printed:
/// `Debug` writes `PseudonymKey(<redacted>)`, and no error message contains it.
#[derive(Clone)]
pub struct PseudonymKey(HmacSha256);

/// A key that cannot be loaded. Messages never contain key material.
#[derive(Debug, Error)]
pub enum KeyError {
    /// The environment variable is not set.
    #[error("environment variable {var} is not set")]
    EnvMissing {
        /// The variable's name.
        var: String,
    },
    /// The key file cannot be read.
    #[error("cannot read key file {}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// Fewer than [`PseudonymKey::MIN_LEN`] bytes.
    #[error("pseudonymization key too short: {len} bytes, at least {min} required")]
    TooShort {
        /// The key's length.
        len: usize,
        /// The minimum length.
        min: usize,
    },
    /// HMAC refused the key (cannot happen for HMAC-SHA256, which accepts any length).
    #[error("pseudonymization key rejected by HMAC-SHA256")]
    Rejected,
}

impl PseudonymKey {
    /// The minimum key length in bytes.
    pub const MIN_LEN: usize = 16;

    /// The key from the raw bytes; they are overwritten once the key is set up.
    ///
    /// # Errors
    /// [`KeyError::TooShort`] under [`Self::MIN_LEN`] bytes.
    pub fn from_bytes(mut bytes: Vec<u8>) -> Result<Self, KeyError> {
        let result = if bytes.len() < Self::MIN_LEN {
            Err(KeyError::TooShort {
                len: bytes.len(),
                min: Self::MIN_LEN,
            })
        } else {
            HmacSha256::new_from_slice(&bytes)
                .map(Self)
                .map_err(|_| KeyError::Rejected)
        };
        bytes.fill(0);
        std::hint::black_box(&bytes);
        result
    }

    /// The key from the bytes of environment variable `var` (trailing newline removed).
    ///
    /// # Errors
    /// [`KeyError::EnvMissing`] when the variable is not set, [`KeyError::TooShort`].
    pub fn from_env(var: &str) -> Result<Self, KeyError> {
        let value = std::env::var_os(var).ok_or_else(|| KeyError::EnvMissing {
            var: var.to_owned(),
        })?;
        Self::from_bytes(trim_newline(value.into_encoded_bytes()))
    }

    /// The key from the content of a file (trailing newline removed).
    ///
    /// # Errors
    /// [`KeyError::Io`] when the file cannot be read, [`KeyError::TooShort`].
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let bytes = std::fs::read(path).map_err(|error| KeyError::Io {
            path: path.to_owned(),
            error,
        })?;
        Self::from_bytes(trim_newline(bytes))
    }

    /// A random 64-byte key from `/dev/urandom`, for runs whose pseudonyms need not be stable
    /// across runs. Where `/dev/urandom` cannot be read, the key is derived from the standard
    /// library's randomly seeded hasher keys, the clock and the process id.
    #[must_use]
    pub fn ephemeral() -> Self {
        let mut bytes = [0u8; 64];
        let from_os = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .is_ok();
        if !from_os {
            bytes = fallback_entropy();
        }
        // A key of exactly one block: infallible.
        let key = Self(HmacSha256::new(&bytes.into()));
        bytes.fill(0);
        std::hint::black_box(&bytes);
        key
    }

    /// HMAC-SHA256 over the concatenation of `parts`.
    pub(crate) fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.0.clone();
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }
}

impl fmt::Debug for PseudonymKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PseudonymKey(<redacted>)")
    }
}

fn trim_newline(mut bytes: Vec<u8>) -> Vec<u8> {
    while matches!(bytes.last(), Some(b'\n' | b'\r')) {
        bytes.pop();
    }
    bytes
}

fn fallback_entropy() -> [u8; 64] {
    use sha2::Digest;
    use std::hash::{BuildHasher, Hasher};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut out = [0u8; 64];
    for (half, chunk) in (0u64..).zip(out.chunks_mut(32)) {
        let mut h = Sha256::new();
        for i in 0u64..8 {
            let mut s = std::collections::hash_map::RandomState::new().build_hasher();
            s.write_u64(half * 8 + i);
            h.update(s.finish().to_le_bytes());
        }
        h.update(now.to_le_bytes());
        h.update(std::process::id().to_le_bytes());
        h.update(half.to_le_bytes());
        chunk.copy_from_slice(&h.finalize());
    }
    out
}

#[cfg(test)]
pub(super) fn fallback_entropy_for_tests() -> [u8; 64] {
    fallback_entropy()
}
