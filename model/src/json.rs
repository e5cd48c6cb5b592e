//! JSON rendering of records that stay in memory (generated events, canonical resources).
//!
//! `serde_json::to_vec` grows its output from 128 bytes by doubling, copying what it has at
//! each step, and the record then keeps up to twice its size until it is dropped. These render
//! into a buffer each thread reuses, which has grown to the largest record already (up to
//! 64 KiB), and copy the result once into an allocation of its exact size.

use std::cell::RefCell;

use serde::Serialize;

/// The most a thread's buffer keeps between records.
const KEPT_BYTES: usize = 64 * 1024;

thread_local! {
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// `value` as JSON bytes, in a vector of their exact size.
///
/// # Errors
/// As `serde_json::to_vec` (a `Serialize` implementation that fails, or a map key that is not
/// a string).
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Vec<u8>> {
    BUFFER.with_borrow_mut(|buf| {
        buf.clear();
        let rendered = serde_json::to_writer(&mut *buf, value).map(|()| buf.as_slice().to_vec());
        // An unusually large record does not leave its thread holding that much.
        if buf.capacity() > KEPT_BYTES {
            *buf = Vec::new();
        }
        rendered
    })
}

/// `value` as a JSON string of its exact size.
///
/// # Errors
/// As [`to_vec`].
pub fn to_string<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    // serde_json writes UTF-8 only; the check cannot fail.
    String::from_utf8(to_vec(value)?).map_err(<serde_json::Error as serde::ser::Error>::custom)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn renders_as_serde_json_does_at_exact_size() {
        let small = serde_json::json!({"a": 1});
        let large = serde_json::json!({"text": "é".repeat(600), "n": [1.5, -2, null]});
        let huge = serde_json::json!({"text": "x".repeat(2 * KEPT_BYTES)});
        // Large first, so the buffer is bigger than the small value when it is rendered.
        for v in [&large, &small, &huge, &large] {
            let bytes = to_vec(v).unwrap();
            assert_eq!(bytes, serde_json::to_vec(v).unwrap());
            assert_eq!(bytes.capacity(), bytes.len());
            assert_eq!(to_string(v).unwrap(), serde_json::to_string(v).unwrap());
        }
        assert!(BUFFER.with_borrow(Vec::capacity) <= KEPT_BYTES);
    }
}
