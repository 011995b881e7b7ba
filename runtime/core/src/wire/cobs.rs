//! Consistent Overhead Byte Stuffing: removes every zero byte from a frame so that a single
//! zero can delimit frames on a byte stream, at a cost of one byte per 254.

/// Why a COBS-encoded frame could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum CobsError {
    /// A zero byte inside the frame, or a block length pointing past its end.
    Malformed,
    /// The output buffer is smaller than [`max_encoded_len`] of the input.
    BufferTooSmall,
}

/// The longest encoding of `n` bytes (without the trailing zero delimiter).
pub const fn max_encoded_len(n: usize) -> usize {
    n + n / 254 + 1
}

/// Encodes `src` into `dst` and returns the encoded length. The output holds no zero byte.
pub fn encode(src: &[u8], dst: &mut [u8]) -> Result<usize, CobsError> {
    if dst.len() < max_encoded_len(src.len()) {
        return Err(CobsError::BufferTooSmall);
    }
    let mut code_at = 0;
    let mut out = 1;
    let mut code: u8 = 1;
    for &byte in src {
        if byte != 0 {
            dst[out] = byte;
            out += 1;
            code += 1;
        }
        if byte == 0 || code == 0xFF {
            dst[code_at] = code;
            code_at = out;
            out += 1;
            code = 1;
        }
    }
    dst[code_at] = code;
    Ok(out)
}

/// Decodes a frame (without its zero delimiter) in place and returns the decoded length.
///
/// Never panics: every index is checked, and decoding writes behind where it reads.
pub fn decode_in_place(buf: &mut [u8]) -> Result<usize, CobsError> {
    let len = buf.len();
    let mut read = 0;
    let mut write = 0;
    while read < len {
        let code = buf[read];
        if code == 0 {
            return Err(CobsError::Malformed);
        }
        read += 1;
        for _ in 1..code {
            let byte = *buf.get(read).ok_or(CobsError::Malformed)?;
            if byte == 0 {
                return Err(CobsError::Malformed);
            }
            buf[write] = byte;
            write += 1;
            read += 1;
        }
        if code != 0xFF && read < len {
            buf[write] = 0;
            write += 1;
        }
    }
    Ok(write)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(data: &[u8]) -> std::vec::Vec<u8> {
        let mut enc = std::vec![0u8; max_encoded_len(data.len())];
        let n = encode(data, &mut enc).unwrap();
        assert!(!enc[..n].contains(&0), "encoding holds a zero");
        let mut dec = enc[..n].to_vec();
        let m = decode_in_place(&mut dec).unwrap();
        dec.truncate(m);
        dec
    }

    #[test]
    fn known_vectors() {
        // Examples from the COBS paper (Cheshire and Baker).
        let mut out = [0u8; 8];
        let n = encode(&[0x11, 0x22, 0x00, 0x33], &mut out).unwrap();
        assert_eq!(&out[..n], &[0x03, 0x11, 0x22, 0x02, 0x33]);
        let n = encode(&[0x00], &mut out).unwrap();
        assert_eq!(&out[..n], &[0x01, 0x01]);
        let n = encode(&[], &mut out).unwrap();
        assert_eq!(&out[..n], &[0x01]);
    }

    #[test]
    fn long_runs_without_zero_split_every_254_bytes() {
        let data: std::vec::Vec<u8> = (0..600).map(|i| (i % 255 + 1) as u8).collect();
        assert_eq!(round_trip(&data), data);
    }

    #[test]
    fn malformed_input_is_refused() {
        assert_eq!(decode_in_place(&mut [0x05, 0x01]), Err(CobsError::Malformed));
        assert_eq!(decode_in_place(&mut [0x02, 0x00]), Err(CobsError::Malformed));
        assert_eq!(decode_in_place(&mut [0x00]), Err(CobsError::Malformed));
    }

    proptest! {
        #[test]
        fn any_bytes_round_trip(data in proptest::collection::vec(any::<u8>(), 0..1200)) {
            prop_assert_eq!(round_trip(&data), data);
        }

        #[test]
        fn decoding_never_panics(mut data in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode_in_place(&mut data);
        }
    }
}
