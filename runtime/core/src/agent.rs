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
    MAX_CHUNK, MAX_FRAME, PROTOCOL_VERSION, PROTOCOL_VERSION_1,
};

/// Most reports sent in answer to one query, whatever the query asks.
pub const MAX_REPORTS_PER_QUERY: u16 = 64;

/// What a device provides to the agent.
///
/// A device watches one sensor or several (a gateway with many measurement points). The
/// model and its head updates belong to the device; status, reports, labels and the
/// adapted head belong to a sensor, numbered from 0. The agent checks a request's sensor
/// against [`Device::sensors`] before it asks the device.
pub trait Device {
    /// Who the device is (the agent fills in the slot capacity).
    fn info(&self) -> DeviceInfo<'_>;
    /// How many sensors the device watches.
    fn sensors(&self) -> u8 {
        1
    }
    /// The name of sensor `sensor`; a device of one sensor goes by its own name.
    fn sensor_name(&self, sensor: u8) -> &str {
        let _ = sensor;
        self.info().device
    }
    /// What sensor `sensor` is doing (the agent fills in the update progress).
    fn status(&self, sensor: u8) -> Status;
    /// SHA-256 of the model the device runs.
    fn model_hash(&self) -> [u8; 32];
    /// Version of the head the device runs.
    fn head_version(&self) -> u32;
    /// The Ed25519 public key updates must be signed with.
    fn public_key(&self) -> [u8; 32];
    /// Sensor `sensor`'s stored report with the smallest sequence number at or after
    /// `since`.
    fn report_from(&mut self, sensor: u8, since: u64) -> Option<AnomalyReport>;
    /// Records a technician's label for a stored report of sensor `sensor`.
    fn label(&mut self, sensor: u8, report: u64, class: u8) -> Result<(), NackReason>;
    /// The largest step by which one update may raise the head version.
    fn max_version_step(&self) -> u32 {
        crate::update::MAX_VERSION_STEP
    }
    /// Whether the device can run `update` (dimensions, classes).
    fn check_head(&self, update: &HeadUpdate) -> Result<(), NackReason>;
    /// Starts scoring with `update`, which is now committed.
    fn apply_head(&mut self, update: &HeadUpdate);
    /// Copies the head sensor `sensor` runs (as adapted on site), serialised as a
    /// [`HeadUpdate`], from `offset` into `out`; returns the total length and the bytes
    /// copied.
    fn head_snapshot(&mut self, sensor: u8, offset: u32, out: &mut [u8]) -> Option<(u32, usize)>;
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
    // An answer goes in its request's version, with its sequence number and sensor.
    let mut reply = |(version, sequence, sensor): (u8, u32, u8), message: Message<'_>| {
        if let Ok(n) = encode_frame(&Envelope { version, sequence, sensor, message }, &mut out) {
            send(&out[..n]);
        }
    };
    let request = match request {
        Ok(request) => request,
        Err(WireError::UnsupportedVersion { sequence, .. }) => {
            let reason = NackReason::UnsupportedVersion { supported: PROTOCOL_VERSION };
            return reply((PROTOCOL_VERSION_1, sequence, 0), Message::Nack(reason));
        }
        Err(WireError::NotARequest { sequence }) => {
            return reply((PROTOCOL_VERSION_1, sequence, 0), Message::Nack(NackReason::Unexpected))
        }
        Err(_) => return reply((PROTOCOL_VERSION_1, 0, 0), Message::Nack(NackReason::BadFrame)),
    };
    let to = (request.version, request.sequence, request.sensor);
    let sensor = request.sensor;
    let sensors = device.sensors();
    if sensor >= sensors {
        return reply(to, Message::Nack(NackReason::UnknownSensor { sensors }));
    }
    let answer = |r: Result<u32, NackReason>| match r {
        Ok(value) => Message::Ack(value),
        Err(reason) => Message::Nack(reason),
    };
    match request.message {
        Message::InfoQuery => {
            let mut info = device.info();
            info.slot_capacity = slots.capacity();
            reply(to, Message::Info(info));
        }
        Message::Ping(value) => reply(to, Message::Pong(value)),
        Message::SensorQuery => {
            reply(to, Message::Sensor { count: sensors, name: device.sensor_name(sensor) })
        }
        Message::StatusQuery => {
            let mut status = device.status(sensor);
            status.update = slots.progress();
            reply(to, Message::Status(status));
        }
        Message::UpdateBegin(header) => {
            let (model, current, step) =
                (device.model_hash(), device.head_version(), device.max_version_step());
            reply(to, answer(slots.begin(&header, &model, current, step)));
        }
        Message::UpdateChunk { offset, data } => reply(to, answer(slots.chunk(offset, data))),
        Message::UpdateCommit { signature } => {
            reply(to, answer(commit(slots, scratch, signature.as_ref(), device)))
        }
        Message::ReportsQuery { since, max } => {
            let mut next = since;
            let mut count = 0;
            while count < max.min(MAX_REPORTS_PER_QUERY) {
                let Some(report) = device.report_from(sensor, next) else { break };
                next = report.sequence.saturating_add(1);
                reply(to, Message::Report { index: count, report });
                count += 1;
            }
            let more = device.report_from(sensor, next).is_some();
            reply(to, Message::ReportsEnd { next, more, count });
        }
        Message::SampleChunk { first, data } => reply(to, answer(device.samples(first, data))),
        Message::Label { report, class } => {
            reply(to, answer(device.label(sensor, report, class).map(|()| 0)))
        }
        Message::HeadSnapshotQuery { offset, max } => {
            let mut chunk = [0u8; MAX_CHUNK];
            let wanted = usize::from(max).clamp(1, MAX_CHUNK);
            match device.head_snapshot(sensor, offset, &mut chunk[..wanted]) {
                Some((total, n)) => reply(to, Message::HeadSnapshot { total, offset, data: &chunk[..n] }),
                None => reply(to, Message::Nack(NackReason::Unexpected)),
            }
        }
        // The answers (Message::is_answer); decode_request never yields them.
        _ => reply(to, Message::Nack(NackReason::Unexpected)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::update::tests::{head_update, signed, signing_key, RamStorage};
    use crate::wire::{decode_frame, Signature, UpdateProgress};
    use std::vec::Vec;

    /// A device with a few stored reports per sensor, over an in-memory pipe.
    struct PipeDevice {
        /// Each sensor's reports.
        reports: Vec<Vec<AnomalyReport>>,
        /// (sensor, report, class)
        labels: Vec<(u8, u64, u8)>,
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
        fn sensors(&self) -> u8 {
            self.reports.len() as u8
        }
        fn sensor_name(&self, sensor: u8) -> &str {
            ["bench-1/DE", "bench-1/NDE"][usize::from(sensor)]
        }
        fn status(&self, sensor: u8) -> Status {
            Status {
                uptime_s: 1,
                windows_scored: 10 + u64::from(sensor),
                sensor_faults: 0,
                alarm_active: false,
                last_score: 0.5,
                threshold: 9.0,
                next_report: self.reports[usize::from(sensor)].len() as u64,
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
        fn report_from(&mut self, sensor: u8, since: u64) -> Option<AnomalyReport> {
            self.reports[usize::from(sensor)].iter().find(|r| r.sequence >= since).cloned()
        }
        fn label(&mut self, sensor: u8, report: u64, class: u8) -> Result<(), NackReason> {
            if !self.reports[usize::from(sensor)].iter().any(|r| r.sequence == report) {
                return Err(NackReason::UnknownReport);
            }
            self.labels.push((sensor, report, class));
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
        fn head_snapshot(&mut self, _sensor: u8, offset: u32, out: &mut [u8]) -> Option<(u32, usize)> {
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
        ask_in(agent, device, Envelope::new(5, message))
    }

    /// Sends one request in `envelope`; every answer must be in its version, with its
    /// sequence number and sensor.
    fn ask_in<S: SlotStorage>(
        agent: &mut Agent<'_, S>,
        device: &mut PipeDevice,
        request: Envelope<'_>,
    ) -> Vec<std::string::String> {
        let mut frame = [0u8; MAX_FRAME];
        let n = encode_frame(&request, &mut frame).unwrap();
        let mut answers = Vec::new();
        agent.receive(&frame[..n], device, &mut |bytes| {
            let mut owned = bytes[..bytes.len() - 1].to_vec();
            let envelope = decode_frame(&mut owned).unwrap();
            let echo = (envelope.version, envelope.sequence, envelope.sensor);
            assert_eq!(echo, (request.version, request.sequence, request.sensor), "answers echo the request");
            answers.push(std::format!("{:?}", envelope.message));
        });
        answers
    }

    #[test]
    fn a_request_reaches_the_sensor_its_envelope_addresses() {
        let mut device = PipeDevice {
            reports: std::vec![(0..3).map(report).collect(), (0..1).map(report).collect()],
            labels: Vec::new(),
            head: None,
            public_key: [0; 32],
        };
        let mut scratch = std::vec![0u8; 8192];
        let mut agent = Agent::new(Slots::open(RamStorage::default()).unwrap(), &mut scratch);
        let to = |sensor, message| Envelope::for_sensor(9, sensor, message);
        assert_eq!(
            ask_in(&mut agent, &mut device, to(1, Message::SensorQuery)),
            [r#"Sensor { count: 2, name: "bench-1/NDE" }"#]
        );
        let status = ask_in(&mut agent, &mut device, to(1, Message::StatusQuery));
        assert!(
            status[0].contains("windows_scored: 11,") && status[0].contains("next_report: 1,"),
            "{status:?}"
        );
        let answers = ask_in(&mut agent, &mut device, to(1, Message::ReportsQuery { since: 0, max: 10 }));
        assert_eq!(answers.len(), 2, "sensor 1 holds one report: {answers:?}");
        assert_eq!(answers[1], "ReportsEnd { next: 1, more: false, count: 1 }");
        assert_eq!(
            ask_in(&mut agent, &mut device, to(1, Message::Label { report: 0, class: 1 })),
            ["Ack(0)"]
        );
        assert_eq!(
            ask_in(&mut agent, &mut device, to(1, Message::Label { report: 2, class: 1 })),
            ["Nack(UnknownReport)"],
            "report 2 is sensor 0's"
        );
        assert_eq!(device.labels, [(1, 0, 1)]);
        assert_eq!(
            ask_in(&mut agent, &mut device, to(2, Message::StatusQuery)),
            ["Nack(UnknownSensor { sensors: 2 })"]
        );
        // A version 1 request is about the first sensor.
        let status = ask(&mut agent, &mut device, Message::StatusQuery);
        assert!(
            status[0].contains("windows_scored: 10,") && status[0].contains("next_report: 3,"),
            "{status:?}"
        );
    }

    #[test]
    fn an_update_from_another_transport_takes_the_same_path_as_one_from_the_line() {
        let key = signing_key(1);
        let mut device = PipeDevice {
            reports: std::vec![Vec::new()],
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
            reports: std::vec![(0..5).map(report).collect()],
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
        assert_eq!(device.labels, [(0, 4, 2)]);
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
