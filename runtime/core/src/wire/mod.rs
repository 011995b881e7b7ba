//! The wire protocol between a host and a device, over a serial line.
//!
//! A frame is `COBS(postcard(Envelope) ++ CRC32) 0x00`: the envelope is serialised with
//! postcard, its CRC-32 (ISO-HDLC, little-endian) is appended, the whole is COBS-encoded so
//! it holds no zero byte, and a zero ends it. A receiver that loses bytes resynchronises at
//! the next zero. Every message fits one frame; a head update larger than
//! [`MAX_CHUNK`] travels in chunks with resume. `docs/wire-format.md` is the specification,
//! with golden bytes that the tests pin.
//!
//! ```
//! use vigil_core::wire::{decode_frame, encode_frame, Envelope, Message, MAX_FRAME};
//!
//! let mut frame = [0u8; MAX_FRAME];
//! let n = encode_frame(&Envelope::new(7, Message::Ping(42)), &mut frame).unwrap();
//! assert_eq!(frame[n - 1], 0, "a frame ends with its delimiter");
//! let envelope = decode_frame(&mut frame[..n - 1]).unwrap();
//! assert_eq!(envelope.sequence, 7);
//! assert_eq!(envelope.message, Message::Ping(42));
//! ```

pub mod cobs;
mod message;

pub use message::{DeviceInfo, Message, NackReason, Signature, Status, UpdateProgress};

use core::fmt;
use crc::{Crc, CRC_32_ISO_HDLC};
use serde::Deserialize;

/// The newest protocol version this build speaks: version 1 with a sensor index in the
/// envelope, for gateways that watch several sensors. Devices answer version 1 and 2
/// requests alike, each in its own version.
pub const PROTOCOL_VERSION: u8 = 2;
/// The first protocol version, without a sensor index: what devices built before
/// sensors speak, and what a host sends when it addresses no sensor.
pub const PROTOCOL_VERSION_1: u8 = 1;
/// Largest data block in an update chunk or a head snapshot.
pub const MAX_CHUNK: usize = 512;
/// Largest serialised envelope (postcard), before the CRC and COBS.
pub const MAX_ENVELOPE: usize = MAX_CHUNK + 96;
/// Largest frame on the line, delimiter included.
pub const MAX_FRAME: usize = cobs::max_encoded_len(MAX_ENVELOPE + 4) + 1;
/// Length of the CRC that ends every frame's payload.
pub const CRC_LEN: usize = 4;

const FRAME_CRC: Crc<u32> = Crc::<u32>::new(&CRC_32_ISO_HDLC);

/// CRC-32 (ISO-HDLC, the one of zlib and Ethernet) of `bytes`.
pub fn crc32(bytes: &[u8]) -> u32 {
    FRAME_CRC.checksum(bytes)
}

/// One message with the protocol version and a sequence number. A device answers with the
/// sequence number of the request, so the host can match answers to requests, and in the
/// request's version, to the same sensor.
///
/// On the wire: `version: u8`, `sequence: varint`, then in version 2 only `sensor: u8`,
/// then the message.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope<'a> {
    /// Protocol version of the sender: [`PROTOCOL_VERSION_1`], or [`PROTOCOL_VERSION`]
    /// when it addresses a sensor.
    pub version: u8,
    /// Chosen by the host per request, echoed by the device.
    pub sequence: u32,
    /// The sensor of the device the message is about (version 2; 0 in version 1, the
    /// device's first sensor).
    pub sensor: u8,
    /// The message.
    pub message: Message<'a>,
}

impl<'a> Envelope<'a> {
    /// A version 1 envelope: about the device, or its first sensor.
    pub fn new(sequence: u32, message: Message<'a>) -> Self {
        Envelope { version: PROTOCOL_VERSION_1, sequence, sensor: 0, message }
    }

    /// A version 2 envelope about sensor `sensor` (0-based) of the device.
    pub fn for_sensor(sequence: u32, sensor: u8, message: Message<'a>) -> Self {
        Envelope { version: PROTOCOL_VERSION, sequence, sensor, message }
    }

    /// An envelope of the same version and sensor as this one, answering it.
    pub fn answer<'b>(&self, message: Message<'b>) -> Envelope<'b> {
        Envelope { version: self.version, sequence: self.sequence, sensor: self.sensor, message }
    }
}

/// Why bytes could not be turned into a frame or an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum WireError {
    /// The COBS encoding is broken (bytes lost or corrupted on the line).
    Cobs,
    /// The frame is shorter than its CRC.
    TooShort,
    /// The CRC does not match: bytes were corrupted on the line.
    Crc,
    /// The CRC matched but the envelope does not decode.
    Malformed,
    /// The sender speaks another protocol version.
    UnsupportedVersion {
        /// The version the frame announced.
        found: u8,
        /// Its sequence number, to address the refusal.
        sequence: u32,
    },
    /// More bytes arrived before a delimiter than the longest frame holds.
    Overlong,
    /// The envelope does not fit [`MAX_ENVELOPE`] (or the caller's buffer).
    TooLarge,
    /// A device received a message that only devices send ([`decode_request`]).
    NotARequest {
        /// Its sequence number, to address the refusal.
        sequence: u32,
    },
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Cobs => f.write_str("frame is not valid COBS (bytes lost or corrupted on the line)"),
            WireError::TooShort => f.write_str("frame is shorter than its CRC"),
            WireError::Crc => f.write_str("frame CRC mismatch (bytes corrupted on the line)"),
            WireError::Malformed => f.write_str("frame passed its CRC but does not decode as a message"),
            WireError::UnsupportedVersion { found, .. } => {
                write!(f, "peer speaks protocol version {found}, this build speaks {PROTOCOL_VERSION}")
            }
            WireError::Overlong => write!(f, "more than {MAX_FRAME} bytes without a frame delimiter"),
            WireError::TooLarge => f.write_str("message does not fit in one frame"),
            WireError::NotARequest { .. } => f.write_str("the message is an answer, not a request"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for WireError {}

/// Encodes `envelope` as a complete frame (delimiter included) into `out`; returns its length.
pub fn encode_frame(envelope: &Envelope<'_>, out: &mut [u8]) -> Result<usize, WireError> {
    let mut raw = [0u8; MAX_ENVELOPE + CRC_LEN];
    let head = match envelope.version {
        PROTOCOL_VERSION_1 => {
            postcard::to_slice(&(envelope.version, envelope.sequence), &mut raw[..MAX_ENVELOPE])
        }
        _ => postcard::to_slice(
            &(envelope.version, envelope.sequence, envelope.sensor),
            &mut raw[..MAX_ENVELOPE],
        ),
    }
    .map_err(|_| WireError::TooLarge)?
    .len();
    let used = head
        + postcard::to_slice(&envelope.message, &mut raw[head..MAX_ENVELOPE])
            .map_err(|_| WireError::TooLarge)?
            .len();
    let crc = crc32(&raw[..used]).to_le_bytes();
    raw[used..used + CRC_LEN].copy_from_slice(&crc);
    let n = cobs::encode(&raw[..used + CRC_LEN], out).map_err(|_| WireError::TooLarge)?;
    let end = out.get_mut(n).ok_or(WireError::TooLarge)?;
    *end = 0;
    Ok(n + 1)
}

/// Decodes one frame (the bytes between two delimiters) in place.
///
/// Never panics, whatever the input.
pub fn decode_frame(frame: &mut [u8]) -> Result<Envelope<'_>, WireError> {
    let (version, sequence, sensor, rest) = open_frame(frame)?;
    let message = whole::<Message<'_>>(rest)?;
    Ok(Envelope { version, sequence, sensor, message })
}

/// Decodes one frame a device received, as [`decode_frame`] does, but only the host's
/// requests: a message only a device sends is [`WireError::NotARequest`]. A device then
/// carries no decoder for its own answers (reports, status, refusals), about 3 KiB less
/// flash on a Cortex-M4. For every request the result equals [`decode_frame`]'s (the
/// tests and the fuzz target compare them).
pub fn decode_request(frame: &mut [u8]) -> Result<Envelope<'_>, WireError> {
    let (version, sequence, sensor, rest) = open_frame(frame)?;
    // postcard writes an enum as its variant's index (a varint), then the variant's fields
    // in order, exactly as it writes a tuple of them.
    let (variant, fields) = postcard::take_from_bytes::<u32>(rest).map_err(|_| WireError::Malformed)?;
    let message = match variant {
        0 => whole::<()>(fields).map(|()| Message::InfoQuery),
        2 => whole(fields).map(Message::Ping),
        4 => whole::<()>(fields).map(|()| Message::StatusQuery),
        6 => whole(fields).map(Message::UpdateBegin),
        7 => whole(fields).map(|(offset, data)| Message::UpdateChunk { offset, data }),
        8 => whole(fields).map(|signature| Message::UpdateCommit { signature }),
        11 => whole(fields).map(|(since, max)| Message::ReportsQuery { since, max }),
        14 => whole(fields).map(|(report, class)| Message::Label { report, class }),
        15 => whole(fields).map(|(offset, max)| Message::HeadSnapshotQuery { offset, max }),
        17 => whole(fields).map(|(first, data)| Message::SampleChunk { first, data }),
        18 => whole::<()>(fields).map(|()| Message::SensorQuery),
        1 | 3 | 5 | 9 | 10 | 12 | 13 | 16 | 19 => Err(WireError::NotARequest { sequence }),
        _ => Err(WireError::Malformed),
    }?;
    Ok(Envelope { version, sequence, sensor, message })
}

/// Checks a frame's COBS, CRC and protocol version; returns the version, the sequence
/// number, the sensor (0 in version 1) and the message's bytes.
fn open_frame(frame: &mut [u8]) -> Result<(u8, u32, u8, &[u8]), WireError> {
    let n = cobs::decode_in_place(frame).map_err(|_| WireError::Cobs)?;
    if n < CRC_LEN {
        return Err(WireError::TooShort);
    }
    let (body, crc) = frame[..n].split_at(n - CRC_LEN);
    if crc32(body).to_le_bytes() != crc {
        return Err(WireError::Crc);
    }
    let ((version, sequence), rest) =
        postcard::take_from_bytes::<(u8, u32)>(body).map_err(|_| WireError::Malformed)?;
    match version {
        PROTOCOL_VERSION_1 => Ok((version, sequence, 0, rest)),
        PROTOCOL_VERSION => {
            let (sensor, rest) = postcard::take_from_bytes::<u8>(rest).map_err(|_| WireError::Malformed)?;
            Ok((version, sequence, sensor, rest))
        }
        _ => Err(WireError::UnsupportedVersion { found: version, sequence }),
    }
}

/// `bytes` decoded as one `T`, with nothing left over.
fn whole<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, WireError> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((value, [])) => Ok(value),
        _ => Err(WireError::Malformed),
    }
}

/// Collects bytes from a serial line into frames.
#[derive(Debug, Clone)]
pub struct FrameReader {
    buf: [u8; MAX_FRAME],
    len: usize,
    overflowed: bool,
}

impl Default for FrameReader {
    fn default() -> Self {
        FrameReader { buf: [0; MAX_FRAME], len: 0, overflowed: false }
    }
}

impl FrameReader {
    /// An empty reader.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one byte. At a delimiter that ends a non-empty frame, returns the frame's bytes
    /// (still COBS-encoded, for [`decode_frame`]), or [`WireError::Overlong`] when the frame
    /// was longer than [`MAX_FRAME`].
    pub fn push(&mut self, byte: u8) -> Option<Result<&mut [u8], WireError>> {
        if byte != 0 {
            if self.len < self.buf.len() {
                self.buf[self.len] = byte;
                self.len += 1;
            } else {
                self.overflowed = true;
            }
            return None;
        }
        let len = core::mem::take(&mut self.len);
        if core::mem::take(&mut self.overflowed) {
            return Some(Err(WireError::Overlong));
        }
        if len == 0 {
            return None;
        }
        Some(Ok(&mut self.buf[..len]))
    }

    /// Forgets a partly received frame.
    pub fn clear(&mut self) {
        self.len = 0;
        self.overflowed = false;
    }
}

#[cfg(test)]
mod tests;
