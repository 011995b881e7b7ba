//! Feeds arbitrary bytes to the frame reader and decoder, as a serial line would.
//!
//! Run: `scripts/fuzz [SECONDS]` (cargo-fuzz, nightly).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_core::wire::{
    cobs, crc32, decode_frame, decode_request, encode_frame, Envelope, FrameReader, WireError, MAX_FRAME,
};

/// A device's decoder ([`decode_request`]) must give what the host's gives, for every
/// request, and refuse the rest: an answer's tag is refused as not a request without its
/// fields being read, so the host's decoder may find those fields malformed.
fn check_request_decoder(frame: &[u8]) {
    let (mut a, mut b) = (frame.to_vec(), frame.to_vec());
    match (decode_frame(&mut a), decode_request(&mut b)) {
        (Ok(host), Ok(device)) => assert_eq!(format!("{host:?}"), format!("{device:?}")),
        (Ok(host), Err(WireError::NotARequest { sequence })) => assert_eq!(host.sequence, sequence),
        (Err(WireError::Malformed), Err(WireError::NotARequest { .. })) => {}
        (Err(host), Err(device)) => assert_eq!(host, device),
        (host, device) => panic!("host decoder {host:?}, device decoder {device:?}"),
    }
}

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
    check_request_decoder(data);
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
        check_request_decoder(&framed[..n]);
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
