//! Feeds arbitrary bytes to the frame reader and decoder, as a serial line would.
//!
//! Run: `scripts/fuzz [SECONDS]` (cargo-fuzz, nightly).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_core::wire::{cobs, crc32, decode_frame, encode_frame, Envelope, FrameReader, MAX_FRAME};

fn check_round_trip(envelope: &Envelope<'_>) {
    // Whatever decodes must encode again, decode again, and encode to the same bytes
    // (bytes, not values: a NaN never equals itself).
    let mut first = [0u8; MAX_FRAME];
    if let Ok(n) = encode_frame(envelope, &mut first) {
        let mut copy = first;
        let again = decode_frame(&mut copy[..n - 1]).expect("a re-encoded envelope decodes");
        let mut second = [0u8; MAX_FRAME];
        let m = encode_frame(&again, &mut second).expect("a decoded envelope encodes");
        assert_eq!(&first[..n], &second[..m]);
    }
}

fuzz_target!(|data: &[u8]| {
    // 1. The bytes as one frame body, as they come off the line.
    let mut body = data.to_vec();
    if let Ok(envelope) = decode_frame(&mut body) {
        check_round_trip(&envelope);
    }

    // 2. The bytes as an envelope behind a valid CRC and COBS, so the fuzzer reaches the
    //    message decoder without having to forge a CRC.
    let mut raw = data.to_vec();
    raw.extend_from_slice(&crc32(data).to_le_bytes());
    let mut framed = vec![0u8; cobs::max_encoded_len(raw.len())];
    if let Ok(n) = cobs::encode(&raw, &mut framed) {
        if let Ok(envelope) = decode_frame(&mut framed[..n]) {
            check_round_trip(&envelope);
        }
    }

    // 3. The bytes as a stream with delimiters.
    let mut reader = FrameReader::new();
    for &byte in data {
        if let Some(Ok(frame)) = reader.push(byte) {
            let _ = decode_frame(frame);
        }
    }
});
