//! Two pseudo-terminal pairs joined by a relay that can flip, drop and truncate bytes and
//! pace them like a serial line: a device opens one end, the host the other.

// Test scaffolding: a pty that cannot be made fails the test at once.
#![allow(clippy::unwrap_used)]

use rand::{Rng, SeedableRng};
use serialport::{SerialPort, TTYPort};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use vigil_client::client::Client;

/// What the relay does to the bytes it carries.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Probability per byte of a flip, a drop or a truncation of the rest of the read.
    pub rate: f64,
    /// Seed of the faults.
    pub seed: u64,
    /// Paces each direction to this baud rate (8N1), like a real serial line.
    pub baud: Option<u32>,
}

/// Two pty pairs joined by a relay: the device opens `device_port`, the host `host_port`.
pub struct Link {
    /// The port the device opens.
    pub device_port: String,
    /// The port the host opens.
    pub host_port: String,
    stop: Arc<AtomicBool>,
    /// Bytes faulted so far.
    pub faulted: Arc<AtomicU64>,
    /// Bytes carried so far.
    pub relayed: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
    // The slave ends stay open so the ptys survive the device and host closing them.
    _slaves: (TTYPort, TTYPort),
}

impl Link {
    /// A link, with `faults` or clean.
    pub fn new(faults: Option<Faults>) -> Link {
        let (device_master, device_slave) = TTYPort::pair().unwrap();
        let (host_master, host_slave) = TTYPort::pair().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let faulted = Arc::new(AtomicU64::new(0));
        let relayed = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        for (i, (from, to)) in [
            (host_master.try_clone_native().unwrap(), device_master.try_clone_native().unwrap()),
            (device_master, host_master),
        ]
        .into_iter()
        .enumerate()
        {
            let (stop, faulted, relayed) = (stop.clone(), faulted.clone(), relayed.clone());
            let faults = faults.map(|f| Faults { seed: f.seed + i as u64, ..f });
            threads.push(std::thread::spawn(move || relay(from, to, faults, &stop, &faulted, &relayed)));
        }
        Link {
            device_port: device_slave.name().unwrap(),
            host_port: host_slave.name().unwrap(),
            stop,
            faulted,
            relayed,
            threads,
            _slaves: (device_slave, host_slave),
        }
    }

    /// A host client on the host end, with short timeouts.
    pub fn client(&self) -> Client {
        let port = vigil_serial::open_port(&self.host_port, 115_200, Duration::from_millis(5)).unwrap();
        let mut client = Client::new(Box::new(port));
        client.timeout = Duration::from_millis(25);
        client.quiet = Duration::from_millis(1);
        client
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn relay(
    mut from: TTYPort,
    mut to: TTYPort,
    faults: Option<Faults>,
    stop: &AtomicBool,
    faulted: &AtomicU64,
    relayed: &AtomicU64,
) {
    from.set_timeout(Duration::from_millis(10)).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(faults.map_or(0, |f| f.seed));
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        let n = match from.read(&mut buf) {
            Ok(n) => n,
            Err(_) => continue,
        };
        let mut out = Vec::with_capacity(n);
        for &byte in &buf[..n] {
            relayed.fetch_add(1, Ordering::Relaxed);
            match faults {
                Some(f) if f.rate > 0.0 && rng.gen_bool(f.rate) => {
                    faulted.fetch_add(1, Ordering::Relaxed);
                    match rng.gen_range(0..5) {
                        0 | 1 => out.push(byte ^ rng.gen_range(1..=255u8)), // flip
                        2 | 3 => {}                                         // drop
                        _ => break,                                         // truncate the rest
                    }
                }
                _ => out.push(byte),
            }
        }
        if to.write_all(&out).is_err() {
            return;
        }
        if let Some(baud) = faults.and_then(|f| f.baud) {
            std::thread::sleep(Duration::from_secs_f64(n as f64 * 10.0 / f64::from(baud)));
        }
    }
}
