//! Deterministic identifiers.
//!
//! Ids are derived from content with SHA-256 so that a replay, or the same job on another number
//! of workers, produces the same ids.

use sha2::{Digest, Sha256};

/// A deterministic UUID (RFC 9562 version 8 layout) from the SHA-256 of `parts`.
#[must_use]
pub fn uuid_from(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x80; // version 8
    b[8] = (b[8] & 0x3f) | 0x80; // RFC variant
    // `8-4-4-4-12` hex digits, written straight into the string (no intermediate strings: ids
    // are made several times per record).
    let mut out = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        push_hex(&mut out, *byte);
    }
    out
}

fn push_hex(out: &mut String, byte: u8) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.push(char::from(DIGITS[usize::from(byte >> 4)]));
    out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
}

/// Lower-case hexadecimal of `bytes`.
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        push_hex(&mut out, *b);
    }
    out
}

/// A stable 64-bit hash of a string, for routing records to workers by key.
#[must_use]
pub fn route_hash(key: &str) -> u64 {
    // FNV-1a: stable across Rust versions and processes, unlike `DefaultHasher`.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn uuid_is_deterministic_and_well_formed() {
        let a = uuid_from(&[b"batch", b"7"]);
        let b = uuid_from(&[b"batch", b"7"]);
        let c = uuid_from(&[b"batch7"]);
        assert_eq!(a, b);
        assert_ne!(a, c, "part boundaries must matter");
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8");
    }

    /// The id is the first 16 bytes of the SHA-256 of the length-prefixed parts, with the
    /// version and variant bits set, as `8-4-4-4-12` lower-case hex digits.
    #[test]
    fn uuid_is_the_digest_in_the_rfc_layout() {
        let mut hasher = Sha256::new();
        for part in [&b"patient"[..], &7u64.to_le_bytes()] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        let mut b = hasher.finalize()[..16].to_vec();
        b[6] = (b[6] & 0x0f) | 0x80;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h = hex(&b);
        let expected = format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        );
        assert_eq!(uuid_from(&[b"patient", &7u64.to_le_bytes()]), expected);
        assert_eq!(hex(&[0x00, 0x9f, 0xa0, 0xff]), "009fa0ff");
    }

    #[test]
    fn route_hash_spreads_keys() {
        let even = (0..1000)
            .filter(|i| route_hash(&format!("P{i:06}")).is_multiple_of(2))
            .count();
        assert!((400..600).contains(&even), "{even}");
    }
}
