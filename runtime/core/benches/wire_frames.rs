//! Guards the cost of the serial wire protocol on a gateway: encoding and decoding one
//! full update chunk frame (postcard + CRC32 + COBS) must stay far below the time the
//! frame takes on the line (a 512-byte chunk takes about 45 ms at 115,200 baud, so a few
//! microseconds leave the link, not the CPU, as the limit).

use criterion::{criterion_main, Criterion};
use std::hint::black_box;
use vigil_core::wire::{decode_frame, encode_frame, Envelope, Message, MAX_CHUNK, MAX_FRAME};

fn bench(c: &mut Criterion) {
    let data: Vec<u8> = (0..MAX_CHUNK).map(|i| (i * 7 % 251) as u8).collect();
    let envelope = Envelope::new(42, Message::UpdateChunk { offset: 4096, data: &data });
    let mut frame = vec![0u8; MAX_FRAME + 1];
    let n = encode_frame(&envelope, &mut frame).expect("a full chunk fits a frame");
    c.bench_function("encode_update_chunk_frame", |b| {
        let mut out = vec![0u8; MAX_FRAME + 1];
        b.iter(|| encode_frame(black_box(&envelope), &mut out).expect("encodes"))
    });
    c.bench_function("decode_update_chunk_frame", |b| {
        let mut scratch = frame[..n - 1].to_vec();
        b.iter(|| {
            scratch.copy_from_slice(&frame[..n - 1]);
            let decoded = decode_frame(black_box(&mut scratch)).expect("decodes");
            black_box(decoded.sequence)
        })
    });
}

#[allow(missing_docs)]
mod harness {
    criterion::criterion_group!(benches, super::bench);
}
use harness::benches;
criterion_main!(benches);
