//! The host side of the wire protocol: requests with sequence numbers, timeouts and
//! retries over a serial port, and the transfers built on them (push, pull, snapshot).

use crate::{ClientError, Result};
use std::time::{Duration, Instant};
use vigil_core::report::AnomalyReport;
use vigil_core::wire::{
    decode_frame, encode_frame, Envelope, FrameReader, Message, NackReason, Signature, Status, MAX_CHUNK,
    MAX_FRAME,
};
use vigil_serial::{read_some, ReadWrite};

/// Smallest chunk an update is cut into on a noisy line.
pub const MIN_CHUNK: usize = 32;

/// Who the device says it is (owned copy of the `Info` message).
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceIdentity {
    /// Device name.
    pub device: String,
    /// Software and version.
    pub software: String,
    /// SHA-256 of its model.
    pub model_hash: [u8; 32],
    /// Embedding dimension of its head.
    pub embedding_dim: u16,
    /// Class names in index order.
    pub class_names: Vec<String>,
    /// Active head version.
    pub head_version: u32,
    /// Largest update it stores.
    pub slot_capacity: u32,
}

/// Why one attempt at a request did not complete.
#[derive(Debug)]
enum Attempt {
    /// The answer was lost or corrupted; worth retrying.
    Lost(&'static str),
    /// The device refused.
    Refused(NackReason),
}

/// What a transfer cost on the line.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LinkStats {
    /// Bytes sent, delimiters included.
    pub bytes_sent: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Requests repeated after a lost or corrupted frame.
    pub retries: u64,
}

/// A connection to a device.
pub struct Client {
    link: Box<dyn ReadWrite + Send>,
    reader: FrameReader,
    sequence: u32,
    /// How long to wait for an answer before retrying.
    pub timeout: Duration,
    /// How many times a request is retried before giving up.
    pub retries: u32,
    /// How long the line must stay quiet after a failed exchange before the retry, so
    /// that stale answers are not taken for new ones.
    pub quiet: Duration,
    /// Traffic so far.
    pub stats: LinkStats,
    /// Chunk size for the next update chunk; adapts to the line's error rate.
    chunk: usize,
    /// Clean chunk exchanges in a row.
    clean: u32,
    /// The last request timed out, so the device may hold part of a frame.
    dangling: bool,
    /// The sensor requests address (protocol version 2); `None`: version 1, the device's
    /// first sensor.
    sensor: Option<u8>,
}

/// How one exchange of a chunked transfer ended.
enum Step<T> {
    Answer(T),
    Lost,
    Refused(NackReason),
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("sequence", &self.sequence).field("stats", &self.stats).finish()
    }
}

impl Client {
    /// A client over `link` (a serial port whose reads time out quickly).
    pub fn new(link: Box<dyn ReadWrite + Send>) -> Self {
        Client {
            link,
            reader: FrameReader::new(),
            sequence: 0,
            timeout: Duration::from_millis(1000),
            retries: 8,
            quiet: Duration::from_millis(30),
            stats: LinkStats::default(),
            chunk: MAX_CHUNK,
            clean: 0,
            dangling: true,
            sensor: None,
        }
    }

    /// Addresses the requests that follow to sensor `sensor` of the device (0-based;
    /// protocol version 2), or with `None` to the device as a device of one sensor
    /// (version 1, which every device speaks).
    pub fn set_sensor(&mut self, sensor: Option<u8>) {
        self.sensor = sensor;
    }

    /// Sends `message` and passes each answer with its sequence number to `on_answer`
    /// until it returns `true`. Retries lost or corrupted exchanges; a refusal is an error.
    pub fn request(
        &mut self,
        message: &Message<'_>,
        mut on_answer: impl FnMut(&Message<'_>) -> bool,
    ) -> Result<()> {
        let mut last = "";
        for attempt in 0..=self.retries {
            if attempt > 0 {
                self.stats.retries += 1;
            }
            match self.attempt(message, &mut on_answer)? {
                None => return Ok(()),
                Some(Attempt::Refused(reason)) => return Err(ClientError::Refused(reason)),
                Some(Attempt::Lost(why)) => {
                    last = why;
                    self.drain()?;
                }
            }
        }
        Err(ClientError::Link(format!(
            "no valid answer after {} attempts (last: {last}); check the cable, port and baud rate",
            self.retries + 1
        )))
    }

    /// Reads and drops bytes until the line has been quiet for a while, so answers to an
    /// abandoned attempt do not disturb the next one.
    fn drain(&mut self) -> Result<()> {
        let quiet = self.quiet;
        let mut last = Instant::now();
        let mut buf = [0u8; 256];
        while last.elapsed() < quiet {
            match read_some(&mut self.link, &mut buf)? {
                0 => std::thread::sleep(Duration::from_millis(1)),
                n => {
                    self.stats.bytes_received += n as u64;
                    last = Instant::now();
                }
            }
        }
        self.reader.clear();
        Ok(())
    }

    /// Like [`Client::request`] but a refusal is returned, not an error.
    fn request_or_nack(
        &mut self,
        message: &Message<'_>,
        on_answer: impl FnMut(&Message<'_>) -> bool,
    ) -> Result<Option<NackReason>> {
        match self.request(message, on_answer) {
            Ok(()) => Ok(None),
            Err(ClientError::Refused(reason)) => Ok(Some(reason)),
            Err(e) => Err(e),
        }
    }

    fn attempt(
        &mut self,
        message: &Message<'_>,
        on_answer: &mut impl FnMut(&Message<'_>) -> bool,
    ) -> Result<Option<Attempt>> {
        self.sequence = self.sequence.wrapping_add(1).max(1);
        let sequence = self.sequence;
        let mut frame = [0u8; MAX_FRAME + 1];
        let envelope = match self.sensor {
            Some(sensor) => Envelope::for_sensor(sequence, sensor, message.clone()),
            None => Envelope::new(sequence, message.clone()),
        };
        let n = encode_frame(&envelope, &mut frame[1..])
            .map_err(|e| ClientError::Link(format!("cannot encode the request: {e}")))?;
        // After a timeout the device may hold a partial frame (its delimiter was lost): a
        // leading delimiter ends it, and the device's BadFrame answer to it is expected.
        let mut expected_bad_frames = u32::from(self.dangling);
        let start = usize::from(!self.dangling);
        self.dangling = false;
        self.link.write_all(&frame[start..n + 1])?;
        self.link.flush()?;
        self.stats.bytes_sent += (n + 1 - start) as u64;
        self.reader.clear();
        let mut deadline = Instant::now() + self.timeout;
        let mut buf = [0u8; 256];
        loop {
            if Instant::now() > deadline {
                self.dangling = true;
                return Ok(Some(Attempt::Lost("timed out")));
            }
            let got = read_some(&mut self.link, &mut buf)?;
            if got == 0 {
                continue;
            }
            self.stats.bytes_received += got as u64;
            deadline = Instant::now() + self.timeout;
            for &byte in &buf[..got] {
                let Some(frame) = self.reader.push(byte) else { continue };
                let Ok(frame) = frame else { return Ok(Some(Attempt::Lost("overlong frame"))) };
                let envelope = match decode_frame(frame) {
                    Ok(envelope) => envelope,
                    Err(_) => return Ok(Some(Attempt::Lost("corrupted answer"))),
                };
                match envelope.message {
                    Message::Nack(NackReason::BadFrame) if expected_bad_frames > 0 => {
                        expected_bad_frames -= 1
                    }
                    Message::Nack(NackReason::BadFrame) => {
                        return Ok(Some(Attempt::Lost("request corrupted on the line")))
                    }
                    _ if envelope.sequence != sequence => continue,
                    Message::Nack(reason) => return Ok(Some(Attempt::Refused(reason))),
                    ref m => {
                        if on_answer(m) {
                            return Ok(None);
                        }
                    }
                }
            }
        }
    }
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PushOutcome {
    /// The device committed the update and runs this head version now.
    Applied(u32),
    /// The device already ran this update, byte for byte.
    AlreadyActive(u32),
}

impl Client {
    /// Asks the device who it is.
    pub fn info(&mut self) -> Result<DeviceIdentity> {
        let mut identity = None;
        self.request(&Message::InfoQuery, |m| match m {
            Message::Info(i) => {
                identity = Some(DeviceIdentity {
                    device: i.device.to_owned(),
                    software: i.software.to_owned(),
                    model_hash: i.model_hash,
                    embedding_dim: i.embedding_dim,
                    class_names: i.class_names.split(',').map(str::to_owned).collect(),
                    head_version: i.head_version,
                    slot_capacity: i.slot_capacity,
                });
                true
            }
            _ => false,
        })?;
        identity.ok_or_else(|| ClientError::Link("the device did not say who it is".into()))
    }

    /// The names of the device's sensors, in index order; `None` from a device built
    /// before sensors were addressed (protocol version 1 only), which has one. Leaves
    /// the requests addressed as they were.
    pub fn sensors(&mut self) -> Result<Option<Vec<String>>> {
        let addressed = self.sensor;
        let mut names = Vec::new();
        let mut count = 1;
        let mut result = Ok(());
        while names.len() < usize::from(count) {
            self.sensor = Some(names.len() as u8);
            let mut answer = None;
            result = self.request(&Message::SensorQuery, |m| match m {
                Message::Sensor { count, name } => {
                    answer = Some((*count, (*name).to_owned()));
                    true
                }
                _ => false,
            });
            match answer {
                Some((n, name)) if result.is_ok() => {
                    count = n;
                    names.push(name);
                }
                _ => break,
            }
        }
        self.sensor = addressed;
        match result {
            Ok(()) => Ok(Some(names)),
            Err(ClientError::Refused(NackReason::UnsupportedVersion { .. })) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Asks the device for its status (of the addressed sensor).
    pub fn status(&mut self) -> Result<Status> {
        let mut status = None;
        self.request(&Message::StatusQuery, |m| match m {
            Message::Status(s) => {
                status = Some(s.clone());
                true
            }
            _ => false,
        })?;
        status.ok_or_else(|| ClientError::Link("the device sent no status".into()))
    }

    fn ack(&mut self, message: &Message<'_>) -> Result<std::result::Result<u32, NackReason>> {
        let mut value = 0;
        let refused = self.request_or_nack(message, |m| match m {
            Message::Ack(v) => {
                value = *v;
                true
            }
            _ => false,
        })?;
        Ok(refused.map_or(Ok(value), Err))
    }

    /// Pushes an update in chunks, resuming where the device is; `progress` gets the bytes
    /// acknowledged and the total. On a noisy line the chunk size halves after a retry and
    /// doubles after four clean chunks.
    pub fn push(
        &mut self,
        header: &vigil_core::update::UpdateHeader,
        payload: &[u8],
        signature: Option<Signature>,
        mut progress: impl FnMut(u32, u32),
    ) -> Result<PushOutcome> {
        let total = header.length;
        let mut offset = match self.ack(&Message::UpdateBegin(*header))? {
            Ok(offset) => offset,
            Err(NackReason::AlreadyActive { version }) => return Ok(PushOutcome::AlreadyActive(version)),
            Err(reason) => return Err(ClientError::Refused(reason)),
        };
        let mut failures = 0;
        while offset < total {
            progress(offset, total);
            let end = (offset as usize + self.chunk).min(total as usize);
            let message = Message::UpdateChunk { offset, data: &payload[offset as usize..end] };
            let step = self.chunk_step(&mut failures, &message, |m| match m {
                Message::Ack(next) => Some(*next),
                _ => None,
            });
            offset = match step.map_err(|e| {
                e.context(format!(
                    "push stopped at byte {offset} of {total}; run the same push again to resume"
                ))
            })? {
                Step::Answer(next) => next,
                Step::Lost => offset,
                Step::Refused(NackReason::Offset { expected }) => expected,
                Step::Refused(reason) => return Err(ClientError::Refused(reason)),
            };
        }
        progress(total, total);
        let retries_before = self.stats.retries;
        match self.ack(&Message::UpdateCommit { signature })? {
            Ok(version) => Ok(PushOutcome::Applied(version)),
            // The commit went through but its answer was lost: a retry finds nothing to
            // commit. The device's head version says whether it was applied.
            Err(NackReason::NoUpdate) if self.stats.retries > retries_before => {
                let active = self.info()?.head_version;
                if active == header.version {
                    Ok(PushOutcome::Applied(active))
                } else {
                    Err(ClientError::Link(format!(
                        "the commit's answer was lost and the device runs head version {active}, not {}",
                        header.version
                    )))
                }
            }
            Err(reason) => Err(ClientError::Refused(reason)),
        }
    }

    /// Pulls every stored report from sequence `since` on, asking `batch` at a time; each
    /// report is passed once, in order, to `on_report`. Returns the next sequence to ask.
    pub fn pull_reports(
        &mut self,
        since: u64,
        batch: u16,
        mut on_report: impl FnMut(AnomalyReport),
    ) -> Result<u64> {
        let mut next = since;
        let mut failures = 0;
        loop {
            let query = Message::ReportsQuery { since: next, max: batch };
            let before = next;
            // Only an unbroken run of the answer is kept: a report whose index skips one
            // means a whole frame vanished, and the end must count what was received.
            let (mut received, mut complete, mut done) = (0u16, false, false);
            let result = self.attempt(&query, &mut |m| match m {
                Message::Report { index, report } => {
                    if *index != received || report.sequence < next {
                        return true;
                    }
                    received += 1;
                    next = report.sequence + 1;
                    on_report(report.clone());
                    false
                }
                Message::ReportsEnd { next: end, more, count } => {
                    if *count == received {
                        next = next.max(*end);
                        (complete, done) = (true, !*more);
                    }
                    true
                }
                _ => false,
            })?;
            let why = match result {
                None if complete && done => return Ok(next),
                None if complete => {
                    failures = 0;
                    continue;
                }
                None => "a report frame was lost",
                Some(Attempt::Refused(reason)) => return Err(ClientError::Refused(reason)),
                Some(Attempt::Lost(why)) => why,
            };
            self.stats.retries += 1;
            failures = if next > before { 0 } else { failures + 1 };
            if failures > self.retries {
                return Err(ClientError::Link(format!(
                    "report pull stalled at sequence {next} ({why}); run it again with --since {next}"
                )));
            }
            self.drain()?;
        }
    }

    /// Sends a technician's label for a report.
    pub fn label(&mut self, report: u64, class: u8) -> Result<()> {
        match self.ack(&Message::Label { report, class })? {
            Ok(_) => Ok(()),
            Err(reason) => Err(ClientError::Refused(reason)),
        }
    }

    /// Fetches the device's running head, serialised as a head update.
    pub fn head_snapshot(&mut self) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        let mut failures = 0;
        loop {
            let offset = bytes.len() as u32;
            let message = Message::HeadSnapshotQuery { offset, max: self.chunk as u16 };
            let step = self.chunk_step(&mut failures, &message, |m| match m {
                Message::HeadSnapshot { total, offset: o, data } if *o == offset => {
                    Some((*total, data.to_vec()))
                }
                _ => None,
            });
            match step.map_err(|e| e.context(format!("head snapshot stopped at byte {offset}")))? {
                Step::Answer((total, data)) => {
                    bytes.extend_from_slice(&data);
                    if bytes.len() as u32 >= total {
                        return Ok(bytes);
                    }
                    if data.is_empty() {
                        return Err(ClientError::Link(format!(
                            "the device sent an empty snapshot chunk at offset {offset} of {total}"
                        )));
                    }
                }
                Step::Lost => {}
                Step::Refused(reason) => return Err(ClientError::Refused(reason)),
            }
        }
    }

    /// Stream index of the next sample the device expects: an empty sample chunk past any
    /// stream's end draws a `SampleGap` naming it.
    pub fn sample_position(&mut self) -> Result<u64> {
        match self.ack(&Message::SampleChunk { first: u64::MAX, data: &[] })? {
            Err(NackReason::SampleGap { expected }) => Ok(expected),
            Err(reason) => Err(ClientError::Refused(reason)),
            Ok(_) => Err(ClientError::Link(
                "the device took an empty sample chunk past the end of its stream".into(),
            )),
        }
    }

    /// Sends sensor samples to a device without a sensor of its own, starting at stream
    /// index `first`; `progress` gets the samples acknowledged. Returns the windows the
    /// device has scored since its start.
    pub fn send_samples(
        &mut self,
        first: u64,
        samples: &[f32],
        mut progress: impl FnMut(usize),
    ) -> Result<u32> {
        let mut sent = 0usize;
        let mut windows = 0;
        let mut failures = 0;
        let mut data = Vec::with_capacity(MAX_CHUNK);
        while sent < samples.len() {
            let end = (sent + self.chunk / 4).min(samples.len());
            data.clear();
            samples[sent..end].iter().for_each(|v| data.extend_from_slice(&v.to_le_bytes()));
            let at = first + sent as u64;
            let message = Message::SampleChunk { first: at, data: &data };
            let step = self.chunk_step(&mut failures, &message, |m| match m {
                Message::Ack(scored) => Some(*scored),
                _ => None,
            });
            match step.map_err(|e| e.context(format!("sending samples stopped at sample {at}")))? {
                Step::Answer(scored) => {
                    windows = scored;
                    sent = end;
                }
                Step::Lost => {}
                Step::Refused(NackReason::SampleGap { expected }) if expected >= first && expected <= at => {
                    sent = (expected - first) as usize;
                }
                Step::Refused(reason) => return Err(ClientError::Refused(reason)),
            }
            progress(sent);
        }
        Ok(windows)
    }

    /// One exchange of a chunked transfer. A lost or corrupted exchange halves the chunk
    /// size (down to [`MIN_CHUNK`]) and counts in `failures`, which four clean exchanges
    /// in a row double again (up to [`MAX_CHUNK`]); more than `retries` failures in a row
    /// end the transfer.
    fn chunk_step<T>(
        &mut self,
        failures: &mut u32,
        message: &Message<'_>,
        mut pick: impl FnMut(&Message<'_>) -> Option<T>,
    ) -> Result<Step<T>> {
        let mut answer = None;
        let attempt = self.attempt(message, &mut |m| {
            answer = pick(m);
            answer.is_some()
        })?;
        match (attempt, answer) {
            (None, Some(value)) => {
                *failures = 0;
                self.clean += 1;
                if self.clean >= 4 {
                    self.chunk = (self.chunk * 2).min(MAX_CHUNK);
                    self.clean = 0;
                }
                Ok(Step::Answer(value))
            }
            (Some(Attempt::Refused(reason)), _) => Ok(Step::Refused(reason)),
            _ => {
                self.stats.retries += 1;
                self.chunk = (self.chunk / 2).max(MIN_CHUNK);
                self.clean = 0;
                *failures += 1;
                if *failures > self.retries {
                    return Err(ClientError::Link(format!(
                        "no valid answer after {failures} attempts; check the cable, port and baud rate"
                    )));
                }
                self.drain()?;
                Ok(Step::Lost)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::io::{Read, Write};
    use vigil_core::report::ReportKind;

    /// A device answering report queries from a list, that loses the whole second report
    /// frame of its first answer (as a receiver overrun or a truncated read would).
    struct LossyDevice {
        reports: Vec<AnomalyReport>,
        reader: FrameReader,
        out: VecDeque<u8>,
        answers: u32,
    }

    impl Read for LossyDevice {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.out.len());
            for (b, byte) in buf.iter_mut().zip(self.out.drain(..n)) {
                *b = byte;
            }
            Ok(n)
        }
    }

    impl Write for LossyDevice {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            for &byte in bytes {
                let Some(Ok(frame)) = self.reader.push(byte) else { continue };
                let Ok(Envelope { sequence, message: Message::ReportsQuery { since, max }, .. }) =
                    decode_frame(frame)
                else {
                    continue;
                };
                self.answers += 1;
                let answer: Vec<AnomalyReport> = self
                    .reports
                    .iter()
                    .filter(|r| r.sequence >= since)
                    .take(usize::from(max))
                    .cloned()
                    .collect();
                let mut frames = Vec::new();
                for (index, report) in answer.iter().enumerate() {
                    frames.push(Message::Report { index: index as u16, report: report.clone() });
                }
                let next = answer.last().map_or(since, |r| r.sequence + 1);
                let more = self.reports.iter().any(|r| r.sequence >= next);
                frames.push(Message::ReportsEnd { next, more, count: answer.len() as u16 });
                for (i, message) in frames.into_iter().enumerate() {
                    if self.answers == 1 && i == 1 {
                        continue; // lost whole
                    }
                    let mut out = [0u8; MAX_FRAME];
                    let n = encode_frame(&Envelope::new(sequence, message), &mut out).unwrap();
                    self.out.extend(&out[..n]);
                }
            }
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A device built before sensors were addressed: it speaks protocol version 1 only,
    /// and refuses any other version as such a device's agent does, with the request's
    /// sequence number.
    struct VersionOneDevice {
        reader: FrameReader,
        out: VecDeque<u8>,
    }

    impl Read for VersionOneDevice {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.out.len());
            for (b, byte) in buf.iter_mut().zip(self.out.drain(..n)) {
                *b = byte;
            }
            Ok(n)
        }
    }

    impl Write for VersionOneDevice {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            for &byte in bytes {
                let Some(Ok(frame)) = self.reader.push(byte) else { continue };
                let Ok(request) = decode_frame(frame) else { continue };
                let answer = match (request.version, request.message) {
                    (1, Message::StatusQuery) => Message::Status(Status {
                        uptime_s: 5,
                        windows_scored: 7,
                        sensor_faults: 0,
                        alarm_active: false,
                        last_score: 1.0,
                        threshold: 9.0,
                        next_report: 3,
                        head_version: 1,
                        update: None,
                    }),
                    (1, _) => Message::Nack(NackReason::Unexpected),
                    _ => Message::Nack(NackReason::UnsupportedVersion { supported: 1 }),
                };
                let mut out = [0u8; MAX_FRAME];
                let n = encode_frame(&Envelope::new(request.sequence, answer), &mut out).unwrap();
                self.out.extend(&out[..n]);
            }
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_device_built_before_sensors_is_taken_as_one_and_spoken_to_as_before() {
        let device = VersionOneDevice { reader: FrameReader::new(), out: VecDeque::new() };
        let mut client = Client::new(Box::new(device));
        client.quiet = Duration::from_millis(1);
        assert_eq!(client.sensors().unwrap(), None, "no sensor list from a version 1 device");
        assert_eq!(client.stats.retries, 0, "its refusal is an answer, not a line fault");
        // The requests that follow go in version 1 again.
        assert_eq!(client.status().unwrap().next_report, 3);
    }

    fn report(sequence: u64) -> AnomalyReport {
        AnomalyReport {
            sequence,
            kind: ReportKind::AlarmRaised,
            stream_time_s: sequence as f64,
            score: 10.0,
            threshold: 9.0,
            class_index: 1,
            probabilities: vigil_core::heapless::Vec::new(),
            model_hash: [1; 32],
            head_version: 1,
            top_bands: vigil_core::heapless::Vec::new(),
            spectrum: None,
        }
    }

    #[test]
    fn a_report_frame_lost_whole_is_asked_again_not_skipped() {
        let reports: Vec<AnomalyReport> = (0..10).map(report).collect();
        let device = LossyDevice {
            reports: reports.clone(),
            reader: FrameReader::new(),
            out: VecDeque::new(),
            answers: 0,
        };
        let mut client = Client::new(Box::new(device));
        client.quiet = Duration::from_millis(1);
        let mut pulled = Vec::new();
        let next = client.pull_reports(0, 4, |r| pulled.push(r)).unwrap();
        assert_eq!(next, 10);
        assert_eq!(pulled, reports);
        assert_eq!(client.stats.retries, 1);
    }
}
