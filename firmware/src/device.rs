//! The firmware's side of the protocol: a [`Device`] over the [`Monitor`], and the loop
//! that serves the agent over any `embedded_io` byte stream.

use crate::monitor::{ActiveHead, Monitor};
use embedded_io::{Read, Write};
use vigil_core::agent::{Agent, Device};
use vigil_core::features::FEATURE_COUNT;
use vigil_core::report::AnomalyReport;
use vigil_core::update::slots::SlotStorage;
use vigil_core::update::HeadUpdate;
use vigil_core::wire::{DeviceInfo, NackReason, Status};

/// Largest serialised head the device snapshots: a 64 x 8 f32 head with its prototype.
pub const MAX_HEAD_BYTES: usize = 4096;

/// Time since the device started.
pub trait Clock {
    /// Seconds since start.
    fn uptime_s(&self) -> u32;
}

/// Who the device is: fixed at build or provisioning time.
#[derive(Debug, Clone, Copy)]
pub struct Identity {
    /// Device name.
    pub name: &'static str,
    /// Software and version.
    pub software: &'static str,
    /// Class names, comma-separated, in class order.
    pub class_names: &'static str,
    /// Classes the device's heads have.
    pub classes: u8,
    /// Ed25519 key that signs updates.
    pub public_key: [u8; 32],
}

/// A microcontroller node: the monitor (kept where the board puts it, typically a
/// `static`) plus what the protocol asks of a device.
#[derive(Debug)]
pub struct FirmwareDevice<'m, C: Clock> {
    identity: Identity,
    monitor: &'m mut Monitor,
    model_hash: [u8; 32],
    clock: C,
}

impl<'m, C: Clock> FirmwareDevice<'m, C> {
    /// A device running `monitor`'s feature backbone.
    pub fn new(identity: Identity, monitor: &'m mut Monitor, clock: C) -> Self {
        let model_hash = monitor.spec().model_hash();
        monitor.set_normal_class(vigil_core::report::normal_class_of(identity.class_names) as u8);
        FirmwareDevice { identity, monitor, model_hash, clock }
    }

    /// The scoring loop.
    pub fn monitor(&self) -> &Monitor {
        self.monitor
    }
}

impl<C: Clock> Device for FirmwareDevice<'_, C> {
    fn info(&self) -> DeviceInfo<'_> {
        DeviceInfo {
            device: self.identity.name,
            software: self.identity.software,
            model_hash: self.model_hash,
            embedding_dim: FEATURE_COUNT as u16,
            classes: self.monitor.head().map_or(self.identity.classes, ActiveHead::classes),
            class_names: self.identity.class_names,
            head_version: self.head_version(),
            slot_capacity: 0,
        }
    }

    fn status(&self, _sensor: u8) -> Status {
        let counters = self.monitor.counters();
        Status {
            uptime_s: self.clock.uptime_s(),
            windows_scored: counters.windows_scored,
            sensor_faults: counters.sensor_faults,
            alarm_active: self.monitor.alarm_active(),
            last_score: self.monitor.last_score(),
            threshold: self.monitor.threshold(),
            next_report: self.monitor.next_sequence(),
            head_version: self.head_version(),
            update: None,
        }
    }

    fn model_hash(&self) -> [u8; 32] {
        self.model_hash
    }

    fn head_version(&self) -> u32 {
        self.monitor.head().map_or(0, ActiveHead::version)
    }

    fn public_key(&self) -> [u8; 32] {
        self.identity.public_key
    }

    fn report_from(&mut self, _sensor: u8, since: u64) -> Option<AnomalyReport> {
        self.monitor.report_from(since, self.model_hash)
    }

    fn label(&mut self, _sensor: u8, report: u64, class: u8) -> Result<(), NackReason> {
        self.monitor.label(report, class)
    }

    fn check_head(&self, update: &HeadUpdate) -> Result<(), NackReason> {
        ActiveHead::check(update, &self.model_hash)
    }

    fn apply_head(&mut self, update: &HeadUpdate) {
        if let Ok(head) = ActiveHead::from_update(update) {
            self.monitor.apply_head(head);
        }
    }

    #[inline(never)]
    fn head_snapshot(&mut self, _sensor: u8, offset: u32, out: &mut [u8]) -> Option<(u32, usize)> {
        let update = self.monitor.head()?.to_update(self.model_hash);
        let mut buf = [0u8; MAX_HEAD_BYTES];
        let bytes = postcard::to_slice(&update, &mut buf).ok()?;
        let from = (offset as usize).min(bytes.len());
        let n = out.len().min(bytes.len() - from);
        out[..n].copy_from_slice(&bytes[from..from + n]);
        Some((bytes.len() as u32, n))
    }

    fn samples(&mut self, first: u64, data: &[u8]) -> Result<u32, NackReason> {
        self.monitor.samples(first, data).map(|windows| windows as u32)
    }
}

/// Reads what the line has (at least one byte, blocking), lets the agent answer every
/// complete request, and writes the answers. Returns the bytes read.
pub fn serve_once<U, S, C>(
    uart: &mut U,
    agent: &mut Agent<'_, S>,
    device: &mut FirmwareDevice<'_, C>,
) -> Result<usize, U::Error>
where
    U: Read + Write,
    S: SlotStorage,
    C: Clock,
{
    let mut buf = [0u8; 64];
    let n = uart.read(&mut buf)?;
    let mut failed = None;
    agent.receive(&buf[..n], device, &mut |frame| {
        if failed.is_none() {
            failed = uart.write_all(frame).err();
        }
    });
    match failed {
        Some(e) => Err(e),
        None => uart.flush().map(|()| n),
    }
}
