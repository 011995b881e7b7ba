//! Feeds arbitrary bytes to the frame reader and decoder, as a serial line would.
//!
//! Run: `cargo +nightly fuzz run frame_decoder -- -max_total_time=600` from `fuzz/`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_core::wire::{decode_frame, encode_frame, FrameReader, MAX_FRAME};

fuzz_target!(|data: &[u8]| {
    // The bytes as one frame body.
    let mut body = data.to_vec();
    if let Ok(envelope) = decode_frame(&mut body) {
        // Whatever decodes must encode again and decode to the same envelope.
        let mut out = [0u8; MAX_FRAME];
        let n = encode_frame(&envelope, &mut out).expect("a decoded envelope re-encodes");
        let again = decode_frame(&mut out[..n - 1]).expect("a re-encoded envelope decodes");
        assert_eq!(again, envelope);
    }
    // The bytes as a stream with delimiters.
    let mut reader = FrameReader::new();
    for &byte in data {
        if let Some(Ok(frame)) = reader.push(byte) {
            let _ = decode_frame(frame);
        }
    }
});
