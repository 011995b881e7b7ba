//! `vigil serve`: the gateway device agent.

use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vigil_client::update_file::read_key_hex;
use vigil_core::adapt::label::LabelConfig;
use vigil_core::adapt::site::SiteConfig;
use vigil_core::agent::Agent;
use vigil_core::update::slots::Slots;
use vigil_runtime::adaptation::AdaptationSettings;
use vigil_runtime::agent::GatewayDevice;
use vigil_runtime::config::{AlarmConfig, GatewayConfig};
use vigil_runtime::pipeline::Pipeline;
use vigil_runtime::slots::{FileSlots, GATEWAY_SLOT_CAPACITY};
use vigil_runtime::stream::{describe, stream_into, windower_for};
use vigil_serial::{open_port, serve_link, DEFAULT_BAUD};

/// Run the pipeline on a sensor stream and serve the device protocol on a serial port:
/// status, signed head updates (A/B slots in the state folder), report pulls, labels and
/// head snapshots.
///
/// Reports, labels and committed updates live in the state folder and survive restarts;
/// the last committed head is restored at start.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Read every setting from this TOML file (see /etc/vigil/vigil.toml) instead of
    /// the options below.
    #[arg(long, conflicts_with_all = ["model", "port", "state", "pubkey", "name", "input"])]
    config: Option<PathBuf>,
    /// ONNX model with Vigil metadata [default: the built-in reference model, bearing-cnn-v3].
    #[arg(long)]
    model: Option<PathBuf>,
    /// Serial port to serve on, such as /dev/ttyS1.
    #[arg(long, short, required_unless_present = "config")]
    port: Option<String>,
    /// Baud rate.
    #[arg(long, default_value_t = DEFAULT_BAUD)]
    baud: u32,
    /// State folder: report store, update slots, labels (created if missing).
    #[arg(long, required_unless_present = "config")]
    state: Option<PathBuf>,
    /// Public key (from `vigil keygen`) that head updates must be signed with.
    #[arg(long, required_unless_present = "config")]
    pubkey: Option<PathBuf>,
    /// Device name reported to hosts [default: the host name].
    #[arg(long)]
    name: Option<String>,
    /// Sensor stream to score (file or `-`); without it the device only serves.
    #[arg(long, short)]
    input: Option<String>,
    #[command(flatten)]
    stream: super::StreamInputArgs,
    /// Learn the site before arming alarms: for this long (such as 10m, 90s or 1h of
    /// stream time) learn the normal state, then calibrate the threshold to
    /// --false-alarms-per-day. Without it, alarms are armed from the start with the
    /// model's prototype. A site commissioned before (state in STATE/adapted) is resumed,
    /// not commissioned again; delete that folder to start over.
    #[arg(long, value_parser = parse_duration)]
    commission: Option<Duration>,
    /// False alarms per day the commissioned threshold aims at.
    #[arg(long, default_value_t = 1.0)]
    false_alarms_per_day: f32,
}

/// Parses `90s`, `10m`, `1h`, `2d` or a number of seconds.
fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let t = text.trim();
    let (number, unit) = t.split_at(t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len()));
    let value: f64 =
        number.trim().parse().map_err(|_| format!("`{text}` is not a duration such as 90s, 10m or 1h"))?;
    let seconds = match unit {
        "" | "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86_400.0,
        _ => return Err(format!("unknown unit `{unit}` in `{text}`; use s, m, h or d")),
    };
    if !(seconds.is_finite() && seconds > 0.0) {
        return Err(format!("`{text}` must be a positive duration"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// The settings `vigil serve` runs with, from its options or its config file.
struct ServeSettings {
    model: Option<PathBuf>,
    port: String,
    baud: u32,
    state: PathBuf,
    pubkey: PathBuf,
    name: Option<String>,
    input: Option<(String, super::StreamInputArgs)>,
    alarm: Option<AlarmConfig>,
    commission: Option<Duration>,
    false_alarms_per_day: f32,
    hop: Option<usize>,
}

impl ServeArgs {
    fn settings(self) -> Result<ServeSettings> {
        let Some(path) = &self.config else {
            let missing = |what: &str| anyhow::anyhow!("{what} is required (or give --config)");
            return Ok(ServeSettings {
                model: self.model,
                port: self.port.ok_or_else(|| missing("--port"))?,
                baud: self.baud,
                state: self.state.ok_or_else(|| missing("--state"))?,
                pubkey: self.pubkey.ok_or_else(|| missing("--pubkey"))?,
                name: self.name,
                hop: self.stream.hop,
                input: self.input.map(|i| (i, self.stream)),
                alarm: None,
                commission: self.commission,
                false_alarms_per_day: self.false_alarms_per_day,
            });
        };
        let c = GatewayConfig::load(path)?;
        let input = match c.input {
            Some(i) => Some((i.path.clone(), super::StreamInputArgs::from_config(&i, path)?)),
            None => None,
        };
        Ok(ServeSettings {
            model: Some(c.model),
            port: c.port,
            baud: c.baud,
            state: c.state,
            pubkey: c.pubkey,
            name: c.name,
            hop: input.as_ref().and_then(|i| i.1.hop),
            input,
            alarm: c.alarm,
            commission: self.commission,
            false_alarms_per_day: self.false_alarms_per_day,
        })
    }

    /// Runs the command until the input fails or the process is stopped.
    pub fn run(self) -> Result<()> {
        let s = self.settings()?;
        let mut model = vigil_runtime::builtin::load_model(s.model.as_deref())?;
        if let Some(alarm) = &s.alarm {
            model
                .set_alarm_policy(alarm.apply(model.metadata().alarm))
                .context("alarm settings of the config")?;
        }
        let public_key = read_key_hex(&s.pubkey)?;
        let input = match &s.input {
            Some((path, stream)) => {
                let (source, options) = stream.open(path)?;
                let windower = windower_for(&model, source.as_ref(), &options)?;
                Some((source, options, windower))
            }
            None => None,
        };
        let store = vigil_runtime::stream::open_store(&s.state)?;
        let class_names = model.metadata().class_names.clone();
        let pipeline = Arc::new(Mutex::new(Pipeline::new(model, Some(store))?));
        let name = s.name.clone().unwrap_or_else(host_name);
        let mut device = GatewayDevice::new(&name, pipeline.clone(), public_key, &s.state);
        let slots = FileSlots::open(&s.state)
            .with_context(|| format!("cannot use state folder {}", s.state.display()))?;
        let slots = Slots::open(slots)
            .with_context(|| format!("cannot read update slots in {}", s.state.display()))?;
        let mut scratch = vec![0u8; GATEWAY_SLOT_CAPACITY as usize];
        let mut agent = Agent::new(slots, &mut scratch);
        if let Some(version) = agent.restore(&mut device).context("cannot restore the committed head")? {
            println!("restored committed head version {version}");
        }
        {
            let mut p = pipeline.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let settings = s.adaptation(p.scorer().model())?;
            let said =
                p.scorer_mut().adapt(settings, Some(&s.state)).context("cannot start site adaptation")?;
            println!("{said}");
            if let Some(c) =
                s.commission.filter(|_| !p.scorer().adaptation().is_some_and(|a| a.site().is_armed()))
            {
                println!(
                    "commissioning for {:.0} s of stream: alarms are armed when it ends",
                    c.as_secs_f64()
                );
            }
        }
        let mut port = open_port(&s.port, s.baud, Duration::from_millis(50))?;
        println!("serving {name} on {} at {} baud; state in {}", s.port, s.baud, s.state.display());

        let stop = Arc::new(AtomicBool::new(false));
        let scoring = input.map(|(source, options, windower)| {
            let (pipeline, stop) = (pipeline.clone(), stop.clone());
            std::thread::spawn(move || {
                let on_event = |_: &_, r: &_| {
                    println!("{}", describe(r, &class_names));
                    Ok(())
                };
                let on_window = |o: &vigil_runtime::scorer::WindowOutcome| {
                    if let Some(threshold) = o.commissioned {
                        println!(
                            "commissioned at {:.1} s: alarms armed, threshold {threshold:.2}",
                            o.end_time_s
                        );
                    }
                    Ok(())
                };
                let result =
                    stream_into::<anyhow::Error>(&pipeline, source, windower, &options, on_event, on_window);
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
            .with_context(|| format!("serial port {} failed", s.port))?;
        if let Some(handle) = scoring {
            handle.join().map_err(|_| anyhow::anyhow!("the scoring thread panicked"))??;
        }
        Ok(())
    }
}

impl ServeSettings {
    /// The adaptation settings for `model` at the stream's hop.
    fn adaptation(&self, model: &vigil_runtime::model::VigilModel) -> Result<AdaptationSettings> {
        let meta = model.metadata();
        let windows_per_s = meta.sample_rate_hz / self.hop.unwrap_or(meta.hop).max(1) as f64;
        let commission_windows = self.commission.map_or(0.0, |d| d.as_secs_f64() * windows_per_s);
        let mut site = SiteConfig::new(commission_windows.ceil() as u32, (windows_per_s * 86_400.0) as f32);
        site.false_alarms_per_day = self.false_alarms_per_day;
        if self.commission.is_some() && site.commission_windows < 4 {
            anyhow::bail!("--commission is shorter than 4 windows ({:.2} s)", 4.0 / windows_per_s);
        }
        if self.commission.is_none() {
            site.commission_windows = 4;
        }
        site.validate()
            .map_err(|e| anyhow::anyhow!("--false-alarms-per-day {}: {e}", self.false_alarms_per_day))?;
        Ok(AdaptationSettings { site, commission: self.commission.is_some(), label: LabelConfig::default() })
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname").map(|s| s.trim().to_owned()).unwrap_or_else(|_| "gateway".into())
}
