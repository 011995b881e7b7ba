//! `vigil serve`: the gateway device agent.

use crate::stream::{describe, stream_into, windower_for};
use crate::update_file::read_key_hex;
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vigil_core::agent::Agent;
use vigil_core::update::slots::Slots;
use vigil_runtime::agent::GatewayDevice;
use vigil_runtime::pipeline::Pipeline;
use vigil_runtime::serial::{open_port, serve_link, DEFAULT_BAUD};
use vigil_runtime::slots::{FileSlots, GATEWAY_SLOT_CAPACITY};

/// Run the pipeline on a sensor stream and serve the device protocol on a serial port:
/// status, signed head updates (A/B slots in the state folder), report pulls, labels and
/// head snapshots.
///
/// Reports, labels and committed updates live in the state folder and survive restarts;
/// the last committed head is restored at start.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// ONNX model with Vigil metadata [default: the shipped bearing-cnn-v1].
    #[arg(long)]
    model: Option<PathBuf>,
    /// Serial port to serve on, such as /dev/ttyS1.
    #[arg(long, short)]
    port: String,
    /// Baud rate.
    #[arg(long, default_value_t = DEFAULT_BAUD)]
    baud: u32,
    /// State folder: report store, update slots, labels (created if missing).
    #[arg(long)]
    state: PathBuf,
    /// Public key (from `vigil keygen`) that head updates must be signed with.
    #[arg(long)]
    pubkey: PathBuf,
    /// Device name reported to hosts [default: the host name].
    #[arg(long)]
    name: Option<String>,
    /// Sensor stream to score (file or `-`); without it the device only serves.
    #[arg(long, short)]
    input: Option<String>,
    #[command(flatten)]
    stream: super::StreamInputArgs,
}

impl ServeArgs {
    /// Runs the command until the input fails or the process is stopped.
    pub fn run(self) -> Result<()> {
        let model = super::load_model(self.model.as_deref())?;
        let public_key = read_key_hex(&self.pubkey)?;
        let input = match &self.input {
            Some(path) => {
                let (source, options) = self.stream.open(path)?;
                let windower = windower_for(&model, source.as_ref(), &options)?;
                Some((source, options, windower))
            }
            None => None,
        };
        let store = crate::stream::open_store(&self.state)?;
        let class_names = model.metadata().class_names.clone();
        let pipeline = Arc::new(Mutex::new(Pipeline::new(model, Some(store))?));
        let name = self.name.clone().unwrap_or_else(host_name);
        let mut device = GatewayDevice::new(&name, pipeline.clone(), public_key, &self.state);
        let slots = FileSlots::open(&self.state)
            .with_context(|| format!("cannot use state folder {}", self.state.display()))?;
        let slots = Slots::open(slots)
            .with_context(|| format!("cannot read update slots in {}", self.state.display()))?;
        let mut scratch = vec![0u8; GATEWAY_SLOT_CAPACITY as usize];
        let mut agent = Agent::new(slots, &mut scratch);
        if let Some(version) = agent.restore(&mut device).context("cannot restore the committed head")? {
            println!("restored committed head version {version}");
        }
        let mut port = open_port(&self.port, self.baud, Duration::from_millis(50))?;
        println!("serving {name} on {} at {} baud; state in {}", self.port, self.baud, self.state.display());

        let stop = Arc::new(AtomicBool::new(false));
        let scoring = input.map(|(source, options, windower)| {
            let (pipeline, stop) = (pipeline.clone(), stop.clone());
            std::thread::spawn(move || {
                let on_event = |_: &_, r: &_| {
                    println!("{}", describe(r, &class_names));
                    Ok(())
                };
                let result = stream_into(&pipeline, source, windower, &options, on_event, |_| Ok(()));
                match &result {
                    Ok(s) => println!(
                        "input ended: {} windows scored, {} alarm(s), {} sensor fault(s); still serving",
                        s.windows, s.alarms, s.sensor_faults
                    ),
                    Err(_) => stop.store(true, Ordering::Relaxed),
                }
                result
            })
        });
        serve_link(&mut port, &mut agent, &mut device, &stop)
            .with_context(|| format!("serial port {} failed", self.port))?;
        if let Some(handle) = scoring {
            handle.join().map_err(|_| anyhow::anyhow!("the scoring thread panicked"))??;
        }
        Ok(())
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname").map(|s| s.trim().to_owned()).unwrap_or_else(|_| "gateway".into())
}
