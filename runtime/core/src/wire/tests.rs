use super::*;
use crate::report::{AnomalyReport, BandContribution, ReportKind};
use crate::update::{UpdateHeader, UpdateKind};
use proptest::prelude::*;
use std::string::String;
use std::vec::Vec;

/// One example of every message, as named in `docs/wire-format.md`.
fn examples() -> Vec<(&'static str, Envelope<'static>)> {
    let report = AnomalyReport {
        sequence: 12,
        kind: ReportKind::AlarmRaised,
        stream_time_s: 61.5,
        score: 14.25,
        threshold: 9.0,
        class_index: 1,
        probabilities: heapless::Vec::from_slice(&[0.125, 0.75, 0.0625, 0.0625]).unwrap(),
        model_hash: [0xAB; 32],
        head_version: 3,
        top_bands: heapless::Vec::from_slice(&[BandContribution {
            low_hz: 3000.0,
            high_hz: 3500.0,
            excess_db: 18.5,
        }])
        .unwrap(),
        spectrum: Some(crate::report::SpectrumSnapshot {
            spectrum: crate::report::SpectrumBins {
                bin_hz: 62.5,
                top_db: -20.0,
                levels: heapless::Vec::from_slice(&[40, 0, 12]).unwrap(),
            },
            envelope: crate::report::SpectrumBins {
                bin_hz: 7.8125,
                top_db: -41.5,
                levels: heapless::Vec::from_slice(&[90, 0]).unwrap(),
            },
        }),
    };
    let header = UpdateHeader {
        kind: UpdateKind::Head,
        model_hash: [0xAB; 32],
        version: 4,
        length: 1000,
        sha256: [0x5A; 32],
    };
    let info = DeviceInfo {
        device: "press-7",
        software: "vigil 0.1.0",
        model_hash: [0xAB; 32],
        embedding_dim: 192,
        classes: 4,
        class_names: "normal,outer_race,inner_race,ball",
        head_version: 3,
        slot_capacity: 65536,
    };
    let status = Status {
        uptime_s: 3600,
        windows_scored: 56250,
        sensor_faults: 2,
        alarm_active: true,
        last_score: 14.25,
        threshold: 9.0,
        next_report: 13,
        head_version: 3,
        update: Some(UpdateProgress { version: 4, received: 512, total: 1000 }),
    };
    const CHUNK: &[u8] = &[1, 2, 3, 0, 255];
    vec![
        ("InfoQuery", Envelope::new(1, Message::InfoQuery)),
        ("Info", Envelope::new(1, Message::Info(info))),
        ("Ping", Envelope::new(2, Message::Ping(42))),
        ("Pong", Envelope::new(2, Message::Pong(42))),
        ("StatusQuery", Envelope::new(3, Message::StatusQuery)),
        ("Status", Envelope::new(3, Message::Status(status))),
        ("UpdateBegin", Envelope::new(4, Message::UpdateBegin(header))),
        ("UpdateChunk", Envelope::new(5, Message::UpdateChunk { offset: 512, data: CHUNK })),
        ("UpdateCommit", Envelope::new(6, Message::UpdateCommit { signature: Some(Signature([0x11; 64])) })),
        ("UpdateCommitUnsigned", Envelope::new(6, Message::UpdateCommit { signature: None })),
        ("Ack", Envelope::new(5, Message::Ack(517))),
        ("Nack", Envelope::new(6, Message::Nack(NackReason::NotNewer { current: 4 }))),
        ("ReportsQuery", Envelope::new(7, Message::ReportsQuery { since: 10, max: 64 })),
        ("Report", Envelope::new(7, Message::Report { index: 2, report })),
        ("ReportsEnd", Envelope::new(7, Message::ReportsEnd { next: 13, more: false, count: 3 })),
        ("Label", Envelope::new(8, Message::Label { report: 12, class: 2 })),
        ("HeadSnapshotQuery", Envelope::new(9, Message::HeadSnapshotQuery { offset: 0, max: 512 })),
        ("HeadSnapshot", Envelope::new(9, Message::HeadSnapshot { total: 5, offset: 0, data: CHUNK })),
        ("SampleChunk", Envelope::new(10, Message::SampleChunk { first: 2048, data: &[0, 0, 0x80, 0x3f] })),
        ("NackSampleGap", Envelope::new(10, Message::Nack(NackReason::SampleGap { expected: 1024 }))),
        ("SensorQuery", Envelope::for_sensor(11, 2, Message::SensorQuery)),
        ("Sensor", Envelope::for_sensor(11, 2, Message::Sensor { count: 4, name: "motor/DE" })),
        ("StatusQueryOfSensor", Envelope::for_sensor(12, 2, Message::StatusQuery)),
        (
            "NackUnknownSensor",
            Envelope::for_sensor(13, 7, Message::Nack(NackReason::UnknownSensor { sensors: 4 })),
        ),
    ]
}

fn frame_hex(envelope: &Envelope<'_>) -> String {
    let mut out = [0u8; MAX_FRAME];
    let n = encode_frame(envelope, &mut out).unwrap();
    out[..n].iter().map(|b| std::format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

/// The golden vectors of `docs/wire-format.md`: lines `golden <Name>: <hex bytes>`.
fn documented_vectors() -> Vec<(String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/wire-format.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let mut vectors = Vec::new();
    let mut lines = doc.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(rest) = line.strip_prefix("golden ") else { continue };
        let (name, hex) = rest.split_once(':').unwrap();
        let mut hex = String::from(hex.trim());
        // Long vectors continue on indented lines.
        while let Some(next) = lines.peek().filter(|l| l.starts_with("  ")) {
            hex.push(' ');
            hex.push_str(next.trim());
            lines.next();
        }
        vectors.push((String::from(name.trim()), hex));
    }
    vectors
}

#[test]
fn golden_vectors_match_the_specification() {
    let documented = documented_vectors();
    let examples = examples();
    let names: Vec<_> = examples.iter().map(|(n, _)| *n).collect();
    let documented_names: Vec<_> = documented.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(documented_names, names, "docs/wire-format.md lists other messages than the tests");
    for ((name, envelope), (_, hex)) in examples.iter().zip(&documented) {
        assert_eq!(&frame_hex(envelope), hex, "golden vector of {name} differs from docs/wire-format.md");
    }
}

/// Prints the vectors in the document's format: `cargo test -p vigil-core print_golden -- --ignored --nocapture`.
#[test]
#[ignore]
fn print_golden() {
    for (name, envelope) in examples() {
        let hex = frame_hex(&envelope);
        let words: Vec<&str> = hex.split(' ').collect();
        std::println!("golden {name}: {}", words[..words.len().min(24)].join(" "));
        for line in words.chunks(24).skip(1) {
            std::println!("  {}", line.join(" "));
        }
    }
}

#[test]
fn every_example_round_trips() {
    for (name, envelope) in examples() {
        let mut out = [0u8; MAX_FRAME];
        let n = encode_frame(&envelope, &mut out).unwrap();
        assert_eq!(out[n - 1], 0);
        assert!(!out[..n - 1].contains(&0), "{name}: zero inside the frame");
        assert_eq!(decode_frame(&mut out[..n - 1]).unwrap(), envelope, "{name}");
    }
}

#[test]
fn a_device_decodes_every_request_as_the_host_does_and_no_answer() {
    let mut requests = 0;
    for (name, envelope) in examples() {
        let mut out = [0u8; MAX_FRAME];
        let n = encode_frame(&envelope, &mut out).unwrap();
        let mut copy = out;
        let as_request = decode_request(&mut copy[..n - 1]);
        if envelope.message.is_answer() {
            assert_eq!(as_request, Err(WireError::NotARequest { sequence: envelope.sequence }), "{name}");
        } else {
            assert_eq!(as_request.as_ref(), Ok(&envelope), "{name}");
            requests += 1;
        }
    }
    assert_eq!(requests, 13, "every request of the protocol has an example");
}

#[test]
fn a_full_chunk_fits_one_frame() {
    let data = [0xEEu8; MAX_CHUNK];
    let envelope = Envelope::new(u32::MAX, Message::UpdateChunk { offset: u32::MAX, data: &data });
    let mut out = [0u8; MAX_FRAME];
    let n = encode_frame(&envelope, &mut out).unwrap();
    assert!(n <= MAX_FRAME);
    let too_big = [0u8; MAX_ENVELOPE];
    let envelope = Envelope::new(1, Message::UpdateChunk { offset: 0, data: &too_big });
    assert_eq!(encode_frame(&envelope, &mut out), Err(WireError::TooLarge));
}

#[test]
fn the_largest_report_fits_one_frame() {
    let bins = |hz| crate::report::SpectrumBins {
        bin_hz: hz,
        top_db: -1.0,
        levels: (0..crate::report::MAX_SPECTRUM_BINS).map(|i| (i * 2) as u8).collect(),
    };
    let report = AnomalyReport {
        sequence: u64::MAX,
        kind: ReportKind::AlarmRaised,
        stream_time_s: 1e9,
        score: 1e6,
        threshold: 9.0,
        class_index: 7,
        probabilities: (0..crate::MAX_CLASSES).map(|_| 0.125).collect(),
        model_hash: [0xFF; 32],
        head_version: u32::MAX,
        top_bands: (0..crate::MAX_TOP_BANDS)
            .map(|_| BandContribution { low_hz: 1.0, high_hz: 2.0, excess_db: 3.0 })
            .collect(),
        spectrum: Some(crate::report::SpectrumSnapshot { spectrum: bins(62.5), envelope: bins(7.8) }),
    };
    let mut out = [0u8; MAX_FRAME];
    let n = encode_frame(&Envelope::new(u32::MAX, Message::Report { index: u16::MAX, report }), &mut out)
        .unwrap();
    assert!(n <= MAX_FRAME);
}

#[test]
fn corruption_is_caught_by_the_crc() {
    let mut out = [0u8; MAX_FRAME];
    let n = encode_frame(&Envelope::new(2, Message::Ping(42)), &mut out).unwrap();
    for i in 0..n - 1 {
        for bit in 0..8 {
            let mut frame = out[..n - 1].to_vec();
            frame[i] ^= 1 << bit;
            assert!(decode_frame(&mut frame).is_err(), "flip of bit {bit} of byte {i} went unnoticed");
        }
    }
}

#[test]
fn version_2_carries_the_sensor_and_version_1_addresses_the_first() {
    let mut out = [0u8; MAX_FRAME];
    let n = encode_frame(&Envelope::for_sensor(5, 3, Message::StatusQuery), &mut out).unwrap();
    let envelope = decode_request(&mut out[..n - 1]).unwrap();
    assert_eq!((envelope.version, envelope.sequence, envelope.sensor), (2, 5, 3));
    let n = encode_frame(&Envelope::new(5, Message::StatusQuery), &mut out).unwrap();
    let envelope = decode_frame(&mut out[..n - 1]).unwrap();
    assert_eq!((envelope.version, envelope.sensor), (1, 0));
    // A version 2 envelope is one byte longer: the sensor, after the sequence.
    let mut v1 = [0u8; MAX_FRAME];
    let mut v2 = [0u8; MAX_FRAME];
    let n1 = encode_frame(&Envelope::new(5, Message::Ping(1)), &mut v1).unwrap();
    let n2 = encode_frame(&Envelope::for_sensor(5, 9, Message::Ping(1)), &mut v2).unwrap();
    assert_eq!(n2, n1 + 1);
}

#[test]
fn another_version_is_refused_with_its_sequence() {
    let mut envelope = Envelope::new(77, Message::Ping(1));
    envelope.version = 9;
    let mut out = [0u8; MAX_FRAME];
    let n = encode_frame(&envelope, &mut out).unwrap();
    assert_eq!(
        decode_frame(&mut out[..n - 1]),
        Err(WireError::UnsupportedVersion { found: 9, sequence: 77 })
    );
}

#[test]
fn reader_splits_frames_and_resynchronises_after_garbage() {
    let mut stream = Vec::new();
    let mut out = [0u8; MAX_FRAME];
    for value in 0..3 {
        let n = encode_frame(&Envelope::new(value, Message::Ping(value)), &mut out).unwrap();
        stream.extend_from_slice(&out[..n]);
        stream.extend_from_slice(&[0x13, 0x37, 0x00]); // line noise between frames
    }
    stream.extend(core::iter::repeat_n(0x55, MAX_FRAME + 10));
    stream.push(0);
    let mut reader = FrameReader::new();
    let mut pings = Vec::new();
    let mut errors = Vec::new();
    for byte in stream {
        match reader.push(byte) {
            Some(Ok(frame)) => match decode_frame(frame) {
                Ok(Envelope { message: Message::Ping(value), .. }) => pings.push(value),
                Ok(other) => panic!("unexpected {other:?}"),
                Err(e) => errors.push(e),
            },
            Some(Err(e)) => errors.push(e),
            None => {}
        }
    }
    assert_eq!(pings, vec![0, 1, 2]);
    assert_eq!(errors.len(), 4);
    assert_eq!(errors[3], WireError::Overlong);
}

fn arb_message() -> impl Strategy<Value = (u32, u8, u64, Vec<u8>, Option<[u8; 32]>)> {
    (
        any::<u32>(),
        any::<u8>(),
        any::<u64>(),
        proptest::collection::vec(any::<u8>(), 0..=MAX_CHUNK),
        any::<Option<[u8; 32]>>(),
    )
}

proptest! {
    #[test]
    fn messages_round_trip((a, b, c, data, key) in arb_message()) {
        let signature = key.map(|k| {
            let mut s = [0u8; 64];
            s[..32].copy_from_slice(&k);
            s[32..].copy_from_slice(&k);
            Signature(s)
        });
        let header = UpdateHeader { kind: UpdateKind::Head, model_hash: key.unwrap_or([b; 32]), version: a, length: a ^ 7, sha256: [b; 32] };
        let messages = [
            Message::Ping(a),
            Message::Ack(a),
            Message::UpdateChunk { offset: a, data: &data },
            Message::UpdateCommit { signature },
            Message::UpdateBegin(header),
            Message::ReportsQuery { since: c, max: a as u16 },
            Message::ReportsEnd { next: c, more: b % 2 == 0, count: a as u16 },
            Message::Label { report: c, class: b },
            Message::HeadSnapshot { total: a, offset: a / 2, data: &data },
        ];
        for message in messages {
            let envelope = Envelope::new(a, message);
            let mut out = [0u8; MAX_FRAME];
            let n = encode_frame(&envelope, &mut out).unwrap();
            prop_assert_eq!(decode_frame(&mut out[..n - 1]).unwrap(), envelope);
        }
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(mut bytes in proptest::collection::vec(any::<u8>(), 0..800)) {
        let mut copy = bytes.clone();
        let _ = decode_frame(&mut bytes);
        let _ = decode_request(&mut copy);
    }

    #[test]
    fn decoding_a_valid_frame_with_bytes_flipped_never_panics(flips in proptest::collection::vec((any::<u16>(), any::<u8>()), 1..6)) {
        let data = [7u8; 40];
        let mut out = [0u8; MAX_FRAME];
        let n = encode_frame(&Envelope::new(1, Message::HeadSnapshot { total: 40, offset: 0, data: &data }), &mut out).unwrap();
        let mut frame = out[..n - 1].to_vec();
        for (at, value) in flips {
            let i = at as usize % frame.len();
            frame[i] = value;
        }
        let _ = decode_frame(&mut frame);
    }
}
