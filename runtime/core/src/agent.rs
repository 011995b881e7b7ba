//! The device side of the wire protocol, shared by the gateway agent and the firmware.
//!
//! [`Agent`] turns received bytes into frames, answers each request and drives the
//! update slots; what is specific to a device (its reports, its running head, labels) sits
//! behind the [`Device`] trait. Answers carry the sequence number of their request.

use crate::report::AnomalyReport;
use crate::update::slots::{SlotStorage, Slots};
use crate::update::HeadUpdate;
use crate::wire::{
    decode_request, encode_frame, DeviceInfo, Envelope, FrameReader, Message, NackReason, Status, WireError,
    MAX_CHUNK, MAX_FRAME, PROTOCOL_VERSION,
};

/// Most reports sent in answer to one query, whatever the query asks.
pub const MAX_REPORTS_PER_QUERY: u16 = 64;

/// What a device provides to the agent.
pub trait Device {
    /// Who the device is (the agent fills in the slot capacity).
    fn info(&self) -> DeviceInfo<'_>;
    /// What the device is doing (the agent fills in the update progress).
    fn status(&self) -> Status;
    /// SHA-256 of the model the device runs.
    fn model_hash(&self) -> [u8; 32];
    /// Version of the head the device runs.
    fn head_version(&self) -> u32;
    /// The Ed25519 public key updates must be signed with.
    fn public_key(&self) -> [u8; 32];
    /// The stored report with the smallest sequence number at or after `since`.
    fn report_from(&mut self, since: u64) -> Option<AnomalyReport>;
    /// Records a technician's label for a stored report.
    fn label(&mut self, report: u64, class: u8) -> Result<(), NackReason>;
    /// The largest step by which one update may raise the head version.
    fn max_version_step(&self) -> u32 {
        crate::update::MAX_VERSION_STEP
    }
    /// Whether the device can run `update` (dimensions, classes).
    fn check_head(&self, update: &HeadUpdate) -> Result<(), NackReason>;
    /// Starts scoring with `update`, which is now committed.
    fn apply_head(&mut self, update: &HeadUpdate);
    /// Copies the running head, serialised as a [`HeadUpdate`], from `offset` into `out`;
    /// returns the total length and the bytes copied.
    fn head_snapshot(&mut self, offset: u32, out: &mut [u8]) -> Option<(u32, usize)>;
    /// Takes sensor samples (little-endian f32) starting at stream index `first`; returns
    /// the windows scored since the start. Devices with a sensor of their own refuse them.
    fn samples(&mut self, first: u64, data: &[u8]) -> Result<u32, NackReason> {
        let _ = (first, data);
        Err(NackReason::Unexpected)
    }
}

/// Serves the protocol for one device over one byte stream.
#[derive(Debug)]
pub struct Agent<'s, S: SlotStorage> {
    reader: FrameReader,
    slots: Slots<S>,
    scratch: &'s mut [u8],
}

impl<'s, S: SlotStorage> Agent<'s, S> {
    /// An agent over `slots`; `scratch` must hold the largest update payload (the slot
    /// capacity) and is used to verify and decode updates.
    pub fn new(slots: Slots<S>, scratch: &'s mut [u8]) -> Self {
        Agent { reader: FrameReader::new(), slots, scratch }
    }

    /// The update slots.
    pub fn slots(&self) -> &Slots<S> {
        &self.slots
    }

    /// Gives the slots back.
    pub fn into_slots(self) -> Slots<S> {
        self.slots
    }

    /// Loads the committed head, if any, into `device`; returns its version. A committed
    /// head the device cannot run (another model) is left unused.
    #[inline(never)]
    pub fn restore(&mut self, device: &mut impl Device) -> Result<Option<u32>, S::Error> {
        let Some(payload) = self.slots.read_active(self.scratch)? else { return Ok(None) };
        let mut update = HeadUpdate::empty();
        match decode_head(payload, &mut update).and_then(|()| device.check_head(&update)) {
            Ok(()) => {
                device.apply_head(&update);
                Ok(Some(update.version))
            }
            Err(_) => Ok(None),
        }
    }

    /// Answers one request that arrived by another way than the line (an MQTT message, a
    /// file): the same checks and state as over the line, the answer as a value. For the
    /// requests answered by `Ack` or `Nack` (updates, labels); others give `Unexpected`.
    pub fn request(&mut self, message: Message<'_>, device: &mut impl Device) -> Result<u32, NackReason> {
        let mut answer = Err(NackReason::Unexpected);
        respond(&mut self.slots, self.scratch, Ok(Envelope::new(0, message)), device, &mut |frame| {
            let mut copy = [0u8; MAX_FRAME];
            let Some(body) = frame.len().checked_sub(1).and_then(|n| copy.get_mut(..n)) else { return };
            body.copy_from_slice(&frame[..frame.len() - 1]);
            answer = match crate::wire::decode_frame(body).map(|e| e.message) {
                Ok(Message::Ack(value)) => Ok(value),
                Ok(Message::Nack(reason)) => Err(reason),
                _ => Err(NackReason::Unexpected),
            };
        });
        answer
    }

    /// Applies a whole update that arrived by another way than the line, exactly as a
    /// pushed one: begin, chunks, commit. Returns the version now active; the device's
    /// refusal otherwise (`AlreadyActive` when it runs this very update).
    pub fn apply_update(
        &mut self,
        header: &crate::update::UpdateHeader,
        payload: &[u8],
        signature: Option<crate::wire::Signature>,
        device: &mut impl Device,
    ) -> Result<u32, NackReason> {
        if payload.len() != header.length as usize {
            return Err(NackReason::Incomplete { received: payload.len() as u32, total: header.length });
        }
        let mut offset = self.request(Message::UpdateBegin(*header), device)?;
        while (offset as usize) < payload.len() {
            let end = (offset as usize + MAX_CHUNK).min(payload.len());
            let data = &payload[offset as usize..end];
            offset = self.request(Message::UpdateChunk { offset, data }, device)?;
        }
        self.request(Message::UpdateCommit { signature }, device)
    }

    /// Takes bytes from the line; `send` gets each complete answer frame.
    pub fn receive(&mut self, bytes: &[u8], device: &mut impl Device, send: &mut impl FnMut(&[u8])) {
        for &byte in bytes {
            let Some(frame) = self.reader.push(byte) else { continue };
            let request = frame.and_then(decode_request);
            respond(&mut self.slots, self.scratch, request, device, send);
        }
    }
}

/// Decodes and validates a stored or received head into `head`.
fn decode_head(payload: &[u8], head: &mut HeadUpdate) -> Result<(), NackReason> {
    head.decode_into(payload).map_err(|_| NackReason::BadPayload)?;
    head.validate().map_err(|_| NackReason::BadPayload)
}

/// Verifies and applies the update received. Kept out of line: the decoded head is large,
/// and its stack frame should exist only while a commit is handled.
#[inline(never)]
fn commit<S: SlotStorage>(
    slots: &mut Slots<S>,
    scratch: &mut [u8],
    signature: Option<&crate::wire::Signature>,
    device: &mut impl Device,
) -> Result<u32, NackReason> {
    let mut update = HeadUpdate::empty();
    let key = device.public_key();
    let model_hash = device.model_hash();
    let record = slots.commit(signature, &key, scratch, |header, payload| {
        decode_head(payload, &mut update)?;
        if (update.version, update.model_hash) != (header.version, header.model_hash) {
            return Err(NackReason::HeaderMismatch);
        }
        if update.model_hash != model_hash {
            return Err(NackReason::OtherModel);
        }
        device.check_head(&update)
    })?;
    device.apply_head(&update);
    Ok(record.version)
}

#[inline(never)]
fn respond<S: SlotStorage>(
    slots: &mut Slots<S>,
    scratch: &mut [u8],
    request: Result<Envelope<'_>, WireError>,
    device: &mut impl Device,
    send: &mut impl FnMut(&[u8]),
) {
    let mut out = [0u8; MAX_FRAME];
    let mut reply = |sequence: u32, message: Message<'_>| {
        if let Ok(n) = encode_frame(&Envelope::new(sequence, message), &mut out) {
            send(&out[..n]);
        }
    };
    let request = match request {
        Ok(request) => request,
        Err(WireError::UnsupportedVersion { sequence, .. }) => {
            let reason = NackReason::UnsupportedVersion { supported: PROTOCOL_VERSION };
            return reply(sequence, Message::Nack(reason));
        }
        Err(WireError::NotARequest { sequence }) => {
            return reply(sequence, Message::Nack(NackReason::Unexpected))
        }
        Err(_) => return reply(0, Message::Nack(NackReason::BadFrame)),
    };
    let seq = request.sequence;
    let answer = |r: Result<u32, NackReason>| match r {
        Ok(value) => Message::Ack(value),
        Err(reason) => Message::Nack(reason),
    };
    match request.message {
        Message::InfoQuery => {
            let mut info = device.info();
            info.slot_capacity = slots.capacity();
            reply(seq, Message::Info(info));
        }
        Message::Ping(value) => reply(seq, Message::Pong(value)),
        Message::StatusQuery => {
            let mut status = device.status();
            status.update = slots.progress();
            reply(seq, Message::Status(status));
        }
        Message::UpdateBegin(header) => {
            let (model, current, step) =
                (device.model_hash(), device.head_version(), device.max_version_step());
            reply(seq, answer(slots.begin(&header, &model, current, step)));
        }
        Message::UpdateChunk { offset, data } => reply(seq, answer(slots.chunk(offset, data))),
        Message::UpdateCommit { signature } => {
            reply(seq, answer(commit(slots, scratch, signature.as_ref(), device)))
        }
        Message::ReportsQuery { since, max } => {
            let mut next = since;
            let mut count = 0;
            while count < max.min(MAX_REPORTS_PER_QUERY) {
                let Some(report) = device.report_from(next) else { break };
                next = report.sequence.saturating_add(1);
                reply(seq, Message::Report { index: count, report });
                count += 1;
            }
            let more = device.report_from(next).is_some();
            reply(seq, Message::ReportsEnd { next, more, count });
        }
        Message::SampleChunk { first, data } => reply(seq, answer(device.samples(first, data))),
        Message::Label { report, class } => reply(seq, answer(device.label(report, class).map(|()| 0))),
        Message::HeadSnapshotQuery { offset, max } => {
            let mut chunk = [0u8; MAX_CHUNK];
            let wanted = usize::from(max).clamp(1, MAX_CHUNK);
            match device.head_snapshot(offset, &mut chunk[..wanted]) {
                Some((total, n)) => reply(seq, Message::HeadSnapshot { total, offset, data: &chunk[..n] }),
                None => reply(seq, Message::Nack(NackReason::Unexpected)),
            }
        }
        // The answers (Message::is_answer); decode_request never yields them.
        _ => reply(seq, Message::Nack(NackReason::Unexpected)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::update::tests::{head_update, signed, signing_key, RamStorage};
    use crate::wire::{decode_frame, Signature, UpdateProgress};
    use std::vec::Vec;

    /// A device with a few stored reports, over an in-memory pipe.
    struct PipeDevice {
        reports: Vec<AnomalyReport>,
        labels: Vec<(u64, u8)>,
        head: Option<HeadUpdate>,
        public_key: [u8; 32],
    }

    impl Device for PipeDevice {
        fn info(&self) -> DeviceInfo<'_> {
            DeviceInfo {
                device: "bench-1",
                software: "test",
                model_hash: [0xAB; 32],
                embedding_dim: 16,
                classes: 4,
                class_names: "normal,outer_race,inner_race,ball",
                head_version: self.head_version(),
                slot_capacity: 0,
            }
        }
        fn status(&self) -> Status {
            Status {
                uptime_s: 1,
                windows_scored: 10,
                sensor_faults: 0,
                alarm_active: false,
                last_score: 0.5,
                threshold: 9.0,
                next_report: self.reports.len() as u64,
                head_version: self.head_version(),
                update: None,
            }
        }
        fn model_hash(&self) -> [u8; 32] {
            [0xAB; 32]
        }
        fn head_version(&self) -> u32 {
            self.head.as_ref().map_or(0, |h| h.version)
        }
        fn public_key(&self) -> [u8; 32] {
            self.public_key
        }
        fn report_from(&mut self, since: u64) -> Option<AnomalyReport> {
            self.reports.iter().find(|r| r.sequence >= since).cloned()
        }
        fn label(&mut self, report: u64, class: u8) -> Result<(), NackReason> {
            if !self.reports.iter().any(|r| r.sequence == report) {
                return Err(NackReason::UnknownReport);
            }
            self.labels.push((report, class));
            Ok(())
        }
        fn check_head(&self, update: &HeadUpdate) -> Result<(), NackReason> {
            if update.inputs == 16 && update.classes == 4 {
                Ok(())
            } else {
                Err(NackReason::BadPayload)
            }
        }
        fn apply_head(&mut self, update: &HeadUpdate) {
            self.head = Some(update.clone());
        }
        fn head_snapshot(&mut self, offset: u32, out: &mut [u8]) -> Option<(u32, usize)> {
            let bytes = postcard::to_allocvec(self.head.as_ref()?).ok()?;
            let rest = bytes.get(offset as usize..)?;
            let n = rest.len().min(out.len());
            out[..n].copy_from_slice(&rest[..n]);
            Some((bytes.len() as u32, n))
        }
    }

    fn report(sequence: u64) -> AnomalyReport {
        AnomalyReport {
            sequence,
            kind: crate::report::ReportKind::AlarmRaised,
            stream_time_s: 1.0,
            score: 12.0,
            threshold: 9.0,
            class_index: 1,
            probabilities: heapless::Vec::new(),
            model_hash: [0xAB; 32],
            head_version: 0,
            top_bands: heapless::Vec::new(),
            spectrum: None,
        }
    }

    /// Sends one request through the agent and returns the decoded answers (owned).
    fn ask<S: SlotStorage>(
        agent: &mut Agent<'_, S>,
        device: &mut PipeDevice,
        message: Message<'_>,
    ) -> Vec<std::string::String> {
        let mut frame = [0u8; MAX_FRAME];
        let n = encode_frame(&Envelope::new(5, message), &mut frame).unwrap();
        let mut answers = Vec::new();
        agent.receive(&frame[..n], device, &mut |bytes| {
            let mut owned = bytes[..bytes.len() - 1].to_vec();
            let envelope = decode_frame(&mut owned).unwrap();
            assert_eq!(envelope.sequence, 5, "answers carry the request's sequence");
            answers.push(std::format!("{:?}", envelope.message));
        });
        answers
    }

    #[test]
    fn an_update_from_another_transport_takes_the_same_path_as_one_from_the_line() {
        let key = signing_key(1);
        let mut device = PipeDevice {
            reports: Vec::new(),
            labels: Vec::new(),
            head: None,
            public_key: key.verifying_key().to_bytes(),
        };
        let mut scratch = std::vec![0u8; 8192];
        let mut agent = Agent::new(Slots::open(RamStorage::default()).unwrap(), &mut scratch);
        let (header, payload, signature) = signed(&head_update(2, 16, 4, false), &key);
        assert_eq!(agent.apply_update(&header, &payload, Some(signature), &mut device), Ok(2));
        assert_eq!(device.head_version(), 2);
        assert_eq!(
            agent.apply_update(&header, &payload, Some(signature), &mut device),
            Err(NackReason::AlreadyActive { version: 2 })
        );
        let (header, payload, _) = signed(&head_update(3, 16, 4, false), &key);
        assert_eq!(agent.apply_update(&header, &payload, None, &mut device), Err(NackReason::Unsigned));
        assert_eq!(agent.request(Message::Ping(1), &mut device), Err(NackReason::Unexpected));
        assert_eq!(device.head_version(), 2);
    }

    #[test]
    fn the_agent_serves_every_request_over_an_in_memory_pipe() {
        let key = signing_key(1);
        let mut device = PipeDevice {
            reports: (0..5).map(report).collect(),
            labels: Vec::new(),
            head: None,
            public_key: key.verifying_key().to_bytes(),
        };
        let mut scratch = std::vec![0u8; 8192];
        let mut agent = Agent::new(Slots::open(RamStorage::default()).unwrap(), &mut scratch);

        assert_eq!(ask(&mut agent, &mut device, Message::Ping(9)), ["Pong(9)"]);
        let info = ask(&mut agent, &mut device, Message::InfoQuery);
        assert!(info[0].contains("slot_capacity: 8192"), "{info:?}");

        let (header, payload, signature) = signed(&head_update(3, 16, 4, true), &key);
        assert_eq!(ask(&mut agent, &mut device, Message::UpdateBegin(header)), ["Ack(0)"]);
        assert_eq!(
            ask(&mut agent, &mut device, Message::UpdateChunk { offset: 0, data: &payload[..100] }),
            ["Ack(100)"]
        );
        let status = ask(&mut agent, &mut device, Message::StatusQuery);
        let progress = UpdateProgress { version: 3, received: 100, total: payload.len() as u32 };
        assert!(status[0].contains(&std::format!("{:?}", Some(progress))), "{status:?}");
        let rest = Message::UpdateChunk { offset: 100, data: &payload[100..] };
        assert_eq!(ask(&mut agent, &mut device, rest), [std::format!("Ack({})", payload.len())]);
        let bad = Message::UpdateCommit { signature: Some(Signature([0; 64])) };
        assert_eq!(ask(&mut agent, &mut device, bad), ["Nack(BadSignature)"]);
        assert_eq!(
            ask(&mut agent, &mut device, Message::UpdateCommit { signature: Some(signature) }),
            ["Ack(3)"]
        );
        assert_eq!(device.head_version(), 3);

        let answers = ask(&mut agent, &mut device, Message::ReportsQuery { since: 2, max: 2 });
        assert_eq!(answers.len(), 3);
        assert!(answers[0].contains("sequence: 2") && answers[1].contains("sequence: 3"));
        assert!(answers[0].starts_with("Report { index: 0,") && answers[1].starts_with("Report { index: 1,"));
        assert_eq!(answers[2], "ReportsEnd { next: 4, more: true, count: 2 }");
        assert_eq!(ask(&mut agent, &mut device, Message::Label { report: 4, class: 2 }), ["Ack(0)"]);
        assert_eq!(
            ask(&mut agent, &mut device, Message::Label { report: 40, class: 2 }),
            ["Nack(UnknownReport)"]
        );
        assert_eq!(device.labels, [(4, 2)]);
        let snapshot = ask(&mut agent, &mut device, Message::HeadSnapshotQuery { offset: 0, max: 64 });
        assert!(snapshot[0].starts_with("HeadSnapshot { total: "), "{snapshot:?}");
        assert_eq!(ask(&mut agent, &mut device, Message::Pong(1)), ["Nack(Unexpected)"]);

        // A signed header whose payload says another version: refused, head 3 stays.
        let (mut header, payload, _) = signed(&head_update(4, 16, 4, false), &key);
        header.version = 40;
        let (bytes, len) = header.signed_bytes();
        let signature = Signature(ed25519_dalek::Signer::sign(&key, &bytes[..len]).to_bytes());
        assert_eq!(ask(&mut agent, &mut device, Message::UpdateBegin(header)), ["Ack(0)"]);
        let chunk = Message::UpdateChunk { offset: 0, data: &payload };
        assert_eq!(ask(&mut agent, &mut device, chunk), [std::format!("Ack({})", payload.len())]);
        let commit = Message::UpdateCommit { signature: Some(signature) };
        assert_eq!(ask(&mut agent, &mut device, commit), ["Nack(HeaderMismatch)"]);
        assert_eq!(device.head_version(), 3);

        // A restarted device restores the committed head from its slots.
        let storage = agent.into_slots().into_storage();
        let mut fresh = PipeDevice { head: None, ..device };
        let mut scratch = std::vec![0u8; 8192];
        let mut agent = Agent::new(Slots::open(storage).unwrap(), &mut scratch);
        assert_eq!(agent.restore(&mut fresh).unwrap(), Some(3));
        assert_eq!(fresh.head_version(), 3);

        // Garbage on the line is answered with BadFrame, not a panic.
        let mut answers = Vec::new();
        agent.receive(&[1, 2, 3, 0], &mut fresh, &mut |b| answers.push(b.to_vec()));
        let mut frame = answers.pop().unwrap();
        frame.pop();
        assert_eq!(decode_frame(&mut frame).unwrap().message, Message::Nack(NackReason::BadFrame));
    }
}
