//! Lower-case hexadecimal: how keys, model hashes and report hashes are written.

/// Lower-case hex of `bytes`.
#[cfg(any(feature = "std", test))]
pub fn encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The 32 bytes that 64 hex digits spell; `None` for any other text.
pub fn decode_32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip_and_refusals() {
        let bytes: [u8; 32] = std::array::from_fn(|i| (i * 37) as u8);
        assert_eq!(super::decode_32(&super::encode(&bytes)), Some(bytes));
        assert_eq!(super::decode_32("ab"), None);
        assert_eq!(super::decode_32(&"zz".repeat(32)), None);
    }
}
