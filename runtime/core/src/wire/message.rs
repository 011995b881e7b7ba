//! The messages a host and a device exchange.

use crate::report::AnomalyReport;
use crate::update::UpdateHeader;
use core::fmt;
use serde::de::{Error as _, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Every message of the protocol. The postcard variant index (the declaration order) is
/// the message's tag on the wire: append new messages at the end, never reorder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
// A report (with its spectrum snapshot) is the largest message; without allocation there is
// no Box to even the variants out, and a message lives on the stack only while it is handled.
#[allow(clippy::large_enum_variant)]
pub enum Message<'a> {
    /// Host asks who the device is.
    InfoQuery,
    /// Device: who it is and what it runs.
    #[serde(borrow)]
    Info(DeviceInfo<'a>),
    /// Host: are you there? The device answers `Pong` with the same value.
    Ping(u32),
    /// Device: the answer to `Ping`.
    Pong(u32),
    /// Host asks for the device's status.
    StatusQuery,
    /// Device: its status.
    Status(Status),
    /// Host starts (or resumes) an update. Answered by `Ack(offset)`: the offset of the
    /// first byte the device still needs.
    UpdateBegin(UpdateHeader),
    /// Host: `data` goes at `offset` of the update. Answered by `Ack(next offset)`.
    UpdateChunk {
        /// Offset of `data` in the update payload.
        offset: u32,
        /// At most [`super::MAX_CHUNK`] bytes.
        data: &'a [u8],
    },
    /// Host: the payload is complete; apply it if the signature holds. Answered by
    /// `Ack(version now active)` or a `Nack` saying why not.
    UpdateCommit {
        /// Ed25519 signature over the update header (`None`: unsigned).
        signature: Option<Signature>,
    },
    /// Device: the request succeeded; the value's meaning is given by the request.
    Ack(u32),
    /// Device: the request was refused, and why.
    Nack(NackReason),
    /// Host asks for stored reports with sequence numbers from `since`, at most `max`.
    ReportsQuery {
        /// First sequence number wanted.
        since: u64,
        /// Most reports to send in answer.
        max: u16,
    },
    /// Device: one stored report, the `index`-th (from 0) of its answer, so that the host
    /// notices a whole frame lost on the line.
    Report {
        /// Position of this report in the answer.
        index: u16,
        /// The report.
        report: AnomalyReport,
    },
    /// Device: no more reports in answer to this query.
    ReportsEnd {
        /// Sequence number to ask from next.
        next: u64,
        /// Whether reports from `next` on are stored.
        more: bool,
        /// Reports sent in this answer; the host checks it received them all.
        count: u16,
    },
    /// Host: a technician's label for a report. Answered by `Ack(0)`.
    Label {
        /// Sequence number of the report.
        report: u64,
        /// Class index the technician assigns.
        class: u8,
    },
    /// Host asks for part of the device's current head, serialised as a head update.
    HeadSnapshotQuery {
        /// Offset of the first byte wanted.
        offset: u32,
        /// Most bytes wanted (the device sends at most [`super::MAX_CHUNK`]).
        max: u16,
    },
    /// Device: part of its current head.
    HeadSnapshot {
        /// Length of the whole serialised head.
        total: u32,
        /// Offset of `data` in it.
        offset: u32,
        /// At most [`super::MAX_CHUNK`] bytes.
        data: &'a [u8],
    },
    /// Host: sensor samples for a device without a sensor of its own (an emulated board, a
    /// replay). Answered by `Ack(windows scored since the start)`; a chunk the device
    /// already holds is acknowledged and ignored, one past a gap gets `Nack(SampleGap)`.
    SampleChunk {
        /// Index in the stream of the first sample.
        first: u64,
        /// Little-endian f32 samples, at most [`super::MAX_CHUNK`] bytes.
        data: &'a [u8],
    },
    /// Host asks for the name of the sensor its envelope addresses, and how many the
    /// device has (a gateway watching several measurement points).
    SensorQuery,
    /// Device: the sensor the request addressed.
    Sensor {
        /// How many sensors the device has; they are addressed 0 to `count - 1`.
        count: u8,
        /// The sensor's name, such as `pump-7/DE`.
        name: &'a str,
    },
}

impl Message<'_> {
    /// Whether only devices send this message (an answer), rather than hosts (a request).
    /// Every variant is named, so a new message must say which it is.
    pub fn is_answer(&self) -> bool {
        match self {
            Message::Info(_)
            | Message::Pong(_)
            | Message::Status(_)
            | Message::Ack(_)
            | Message::Nack(_)
            | Message::Report { .. }
            | Message::ReportsEnd { .. }
            | Message::HeadSnapshot { .. }
            | Message::Sensor { .. } => true,
            Message::InfoQuery
            | Message::Ping(_)
            | Message::StatusQuery
            | Message::UpdateBegin(_)
            | Message::UpdateChunk { .. }
            | Message::UpdateCommit { .. }
            | Message::ReportsQuery { .. }
            | Message::Label { .. }
            | Message::HeadSnapshotQuery { .. }
            | Message::SampleChunk { .. }
            | Message::SensorQuery => false,
        }
    }
}

/// Who a device is and what it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo<'a> {
    /// Device name (host name, serial number).
    pub device: &'a str,
    /// Software and version, such as `vigil 0.1.0`.
    pub software: &'a str,
    /// SHA-256 of the model the device runs; updates must name it.
    pub model_hash: [u8; 32],
    /// Embedding dimension the head takes.
    pub embedding_dim: u16,
    /// Number of classes of the head.
    pub classes: u8,
    /// The class names, comma-separated, in class-index order.
    pub class_names: &'a str,
    /// Version of the active head.
    pub head_version: u32,
    /// Largest update payload the device can store.
    pub slot_capacity: u32,
}

/// What the device is doing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Status {
    /// Seconds since the device started.
    pub uptime_s: u32,
    /// Windows scored since the start.
    pub windows_scored: u64,
    /// Windows skipped for non-finite samples.
    pub sensor_faults: u64,
    /// Whether the alarm is active.
    pub alarm_active: bool,
    /// Anomaly score of the last scored window.
    pub last_score: f32,
    /// Alarm threshold in force.
    pub threshold: f32,
    /// Sequence number the next report will get.
    pub next_report: u64,
    /// Version of the active head.
    pub head_version: u32,
    /// An update being received, if any.
    pub update: Option<UpdateProgress>,
}

/// How far an update has been received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct UpdateProgress {
    /// Version of the update.
    pub version: u32,
    /// Bytes received.
    pub received: u32,
    /// Bytes in all.
    pub total: u32,
}

/// Why a device refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum NackReason {
    /// The request frame was corrupted (COBS, CRC) or did not decode.
    BadFrame,
    /// The request used another protocol version.
    UnsupportedVersion {
        /// The version the device speaks.
        supported: u8,
    },
    /// The device does not accept this message here (for example a `Pong`).
    Unexpected,
    /// A chunk or commit arrived with no update begun.
    NoUpdate,
    /// A chunk did not start where the device expects the next byte.
    Offset {
        /// The offset the device expects.
        expected: u32,
    },
    /// The update is larger than the device's slot.
    TooLarge {
        /// Bytes the slot holds.
        capacity: u32,
    },
    /// The update is for another model than the one the device runs.
    OtherModel,
    /// The update's version is not above the active one.
    NotNewer {
        /// The active version.
        current: u32,
    },
    /// Commit before every byte arrived.
    Incomplete {
        /// Bytes received.
        received: u32,
        /// Bytes announced.
        total: u32,
    },
    /// The received payload does not hash to the announced SHA-256.
    HashMismatch,
    /// The commit carried no signature.
    Unsigned,
    /// The signature does not verify with the device's public key.
    BadSignature,
    /// The payload is not a head this device can run (dimensions, values).
    BadPayload,
    /// The device could not read or write its storage.
    Storage,
    /// No stored report has that sequence number.
    UnknownReport,
    /// The class index is not one of the head's classes.
    UnknownClass {
        /// Number of classes of the head.
        classes: u8,
    },
    /// Samples arrived past a gap in the stream.
    SampleGap {
        /// Index of the next sample the device expects.
        expected: u64,
    },
    /// The payload names another version or model than its signed header.
    HeaderMismatch,
    /// The device already runs this very update (same version, same payload hash).
    AlreadyActive {
        /// Its version.
        version: u32,
    },
    /// The update's version is further above the active one than the device allows.
    VersionJump {
        /// The active version.
        current: u32,
        /// The largest step the device takes in one update.
        max_step: u32,
    },
    /// The envelope addressed a sensor the device does not have.
    UnknownSensor {
        /// How many sensors the device has.
        sensors: u8,
    },
}

impl fmt::Display for NackReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NackReason::BadFrame => f.write_str("the request arrived corrupted"),
            NackReason::UnsupportedVersion { supported } => {
                write!(f, "the device speaks protocol version {supported} only")
            }
            NackReason::Unexpected => f.write_str("the device does not accept this message"),
            NackReason::NoUpdate => f.write_str("no update in progress (send update begin first)"),
            NackReason::Offset { expected } => write!(f, "the device expects the chunk at offset {expected}"),
            NackReason::TooLarge { capacity } => {
                write!(f, "the update is larger than the device's {capacity}-byte slot")
            }
            NackReason::OtherModel => f.write_str("the update is for another model than the device runs"),
            NackReason::NotNewer { current } => write!(
                f,
                "the update's version is not above the active version {current}; a device takes \
                 each version once, so export it again with a higher --version"
            ),
            NackReason::Incomplete { received, total } => {
                write!(f, "the update is incomplete: {received} of {total} bytes received")
            }
            NackReason::HashMismatch => f.write_str("the received payload does not match its SHA-256"),
            NackReason::Unsigned => f.write_str("the update is unsigned (sign it with `vigil sign`)"),
            NackReason::BadSignature => {
                f.write_str("the signature does not verify with the device's public key")
            }
            NackReason::BadPayload => f.write_str("the payload is not a head this device can run"),
            NackReason::Storage => f.write_str("the device could not write its update storage"),
            NackReason::UnknownReport => f.write_str("the device stores no report with that sequence number"),
            NackReason::UnknownClass { classes } => {
                write!(f, "the class index is out of range (the head has {classes} classes)")
            }
            NackReason::SampleGap { expected } => {
                write!(f, "samples arrived past a gap: the device expects sample {expected} next")
            }
            NackReason::HeaderMismatch => {
                f.write_str("the payload's version or model differs from its signed header's")
            }
            NackReason::AlreadyActive { version } => {
                write!(f, "the device already runs this update (head version {version})")
            }
            NackReason::VersionJump { current, max_step } => write!(
                f,
                "the update's version is more than {max_step} above the active version {current}; \
                 publish version {} at most",
                u64::from(*current) + u64::from(*max_step)
            ),
            NackReason::UnknownSensor { sensors } => {
                write!(f, "the device has {sensors} sensor(s), numbered from 0; this is not one of them")
            }
        }
    }
}

/// An Ed25519 signature (64 bytes, serialised as a fixed-length tuple).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({:02x}{:02x}{:02x}{:02x}..)", self.0[0], self.0[1], self.0[2], self.0[3])
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut tuple = serializer.serialize_tuple(64)?;
        for byte in &self.0 {
            tuple.serialize_element(byte)?;
        }
        tuple.end()
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SignatureVisitor;
        impl<'de> Visitor<'de> for SignatureVisitor {
            type Value = Signature;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("64 signature bytes")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Signature, A::Error> {
                let mut bytes = [0u8; 64];
                for (i, byte) in bytes.iter_mut().enumerate() {
                    *byte = seq.next_element()?.ok_or_else(|| A::Error::invalid_length(i, &self))?;
                }
                Ok(Signature(bytes))
            }
        }
        deserializer.deserialize_tuple(64, SignatureVisitor)
    }
}
