//! Serial lines, shared by the gateway agent (which serves Vigil's device protocol on
//! one) and the host tools (which talk to devices over one): opening a port with errors
//! that name it and say what to do, reads that time out, and the serving loop.

use std::io::{ErrorKind, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use vigil_core::agent::{Agent, Device};
use vigil_core::update::slots::SlotStorage;

/// Baud rate when none is given.
pub const DEFAULT_BAUD: u32 = 115_200;

/// An open serial port. serialport holds an exclusive advisory lock on the device node
/// while it is open, so a second Vigil process on the same port is refused as busy.
pub type Port = Box<dyn serialport::SerialPort>;

/// A serial port that could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("serial port {port} {problem}")]
pub struct PortError {
    /// The port's path.
    pub port: String,
    /// What is wrong, and what to do.
    pub problem: String,
}

/// Opens serial port `path` at `baud`, 8N1, with reads that time out after `timeout`.
pub fn open_port(path: &str, baud: u32, timeout: Duration) -> Result<Port, PortError> {
    let error = |problem: String| PortError { port: path.to_owned(), problem };
    if !std::path::Path::new(path).exists() {
        return Err(error(
            "does not exist; check the name (for example /dev/ttyUSB0 or /dev/ttyACM0)".into(),
        ));
    }
    serialport::new(path, baud).timeout(timeout).open().map_err(|e| {
        error(match e.kind() {
            _ if e.description.contains("exclusive lock") || e.description.contains("busy") => {
                "is busy: another program (another vigil, a terminal) has it open; close that first".into()
            }
            serialport::ErrorKind::Io(ErrorKind::PermissionDenied) => {
                "cannot be opened: permission denied; add yourself to the `dialout` group".into()
            }
            serialport::ErrorKind::NoDevice => {
                format!("cannot be opened ({}); is the device plugged in?", e.description)
            }
            _ => format!("cannot be opened: {}", e.description),
        })
    })
}

/// Serves the protocol on `link` until `stop` is set or the link fails.
pub fn serve_link<S: SlotStorage>(
    link: &mut dyn ReadWrite,
    agent: &mut Agent<'_, S>,
    device: &mut impl Device,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    serve_link_with(link, stop, |bytes, send| agent.receive(bytes, device, &mut |frame| send(frame)))
}

/// Serves the protocol on `link` until `stop` is set or the link fails, handing the bytes
/// read to `receive` (an agent behind a lock, say), which sends each answer frame.
pub fn serve_link_with(
    link: &mut dyn ReadWrite,
    stop: &AtomicBool,
    mut receive: impl FnMut(&[u8], &mut dyn FnMut(&[u8])),
) -> std::io::Result<()> {
    let mut buf = [0u8; 1024];
    while !stop.load(Ordering::Relaxed) {
        let n = read_some(link, &mut buf)?;
        if n == 0 {
            // A pty whose other side is closed reads 0 at once; do not spin.
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let mut failed = None;
        receive(&buf[..n], &mut |frame| {
            if failed.is_none() {
                failed = link.write_all(frame).and_then(|()| link.flush()).err();
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
    }
    Ok(())
}

/// Reads what the link has; a read that times out (or is interrupted) reads 0 bytes.
pub fn read_some(link: &mut (impl Read + ?Sized), buf: &mut [u8]) -> std::io::Result<usize> {
    match link.read(buf) {
        Err(e)
            if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock | ErrorKind::Interrupted) =>
        {
            Ok(0)
        }
        other => other,
    }
}

/// A byte link both ways (a serial port, a pty, a socket).
pub trait ReadWrite: Read + Write {}
impl<T: Read + Write + ?Sized> ReadWrite for T {}
