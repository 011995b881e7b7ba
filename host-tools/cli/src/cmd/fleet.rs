//! `vigil fleet merge`: one head from what many devices learned.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use vigil_client::fleet;
use vigil_client::update_file::{read_secret_key, UpdateFile};

/// Work with the heads of a fleet of devices.
#[derive(Debug, Args)]
pub struct FleetArgs {
    #[command(subcommand)]
    command: FleetCommand,
}

#[derive(Debug, Subcommand)]
enum FleetCommand {
    /// Average the heads of many devices' snapshots (from `vigil snapshot`), weighted by
    /// the labels each learned from, into one signed head update to push to the fleet.
    Merge(MergeArgs),
    /// A table of the devices on an MQTT broker: online, model, head version, alarm state,
    /// reports stored (from their retained status; docs/mqtt.md).
    Status(StatusArgs),
    /// Collect every device's reports from an MQTT broker into a JSONL file, once each:
    /// resumable, with a per-device high-water mark beside the file.
    Reports(ReportsArgs),
    /// Publish a signed head update (.vup) to every device of a site (or of a group) on an
    /// MQTT broker, retained so that devices offline now take it when they come back; then
    /// wait for and tabulate each online device's outcome. Each device checks it exactly
    /// as a serial push (signature, hash, model, version) and applies it through its A/B
    /// slots.
    Push(PushArgs),
    /// Measure many simulated gateways on one broker (a Mosquitto started here): every
    /// report delivered once across a broker outage, reports per second end to end, and
    /// one signed update to every device.
    Bench(super::fleet_bench::FleetBenchArgs),
}

/// The broker a host command talks to.
#[derive(Debug, Args)]
pub struct BrokerArgs {
    /// The broker, `mqtt://HOST[:PORT]` or `mqtts://HOST[:PORT]`.
    #[arg(long)]
    broker: String,
    #[command(flatten)]
    tls: super::TlsArgs,
}

impl BrokerArgs {
    /// The broker, with its TLS files and credentials.
    fn connect(&self) -> Result<vigil_mqtt::Broker> {
        self.tls.broker(&self.broker)
    }
}

/// Options of `vigil fleet push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    /// The site whose devices take the update.
    #[arg(long)]
    site: String,
    /// Only the devices of this group (`vigil serve --group`, `groups` in [mqtt]).
    #[arg(long)]
    group: Option<String>,
    /// How long to wait for every online device's answer.
    #[arg(long, default_value = "30s", value_parser = super::parse_duration)]
    timeout: std::time::Duration,
    /// The signed update file (`vigil export-head`, then `vigil sign`).
    update: PathBuf,
}

/// Options of `vigil fleet status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    /// Only this site [default: every site].
    #[arg(long)]
    site: Option<String>,
    /// How long the broker must stay quiet before the table is printed.
    #[arg(long, default_value = "1s", value_parser = super::parse_duration)]
    quiet: std::time::Duration,
}

/// Options of `vigil fleet reports`.
#[derive(Debug, Args)]
pub struct ReportsArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    /// Only this site [default: every site].
    #[arg(long)]
    site: Option<String>,
    /// The JSONL file the reports are appended to; the marks go to FILE.marks.
    #[arg(long, short)]
    output: PathBuf,
    /// The broker session that keeps reports for this collection while the host is away
    /// [default: vigil-fleet- and the output file's name]. The first collection creates
    /// it: reports published before it are not kept for it.
    #[arg(long)]
    session: Option<String>,
    /// How long the broker must stay quiet before the collection ends.
    #[arg(long, default_value = "2s", value_parser = super::parse_duration)]
    quiet: std::time::Duration,
    /// Also write the technician's HTML report of every report collected so far: an
    /// overview of the devices, worst first, then a section per device.
    #[arg(long)]
    html: Option<PathBuf>,
    /// The machines' ISO 10816-1 class, for the zones of the health trend in --html (I,
    /// II, III or IV; see `vigil report --help`).
    #[arg(long, value_enum, default_value_t = crate::report_html::MachineClass::II)]
    machine_class: crate::report_html::MachineClass,
}

/// Options of `vigil fleet merge`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Folder of snapshots (`*.vup`, one per device, all of the same model).
    #[arg(long, required_unless_present = "broker", conflicts_with = "broker")]
    snapshots: Option<PathBuf>,
    /// Read the snapshots the devices of a site keep on this MQTT broker instead
    /// (`mqtt://HOST[:PORT]`, with --site).
    #[arg(long, requires = "site")]
    broker: Option<String>,
    #[command(flatten)]
    tls: super::TlsArgs,
    /// The site whose devices' snapshots to merge (with --broker).
    #[arg(long, requires = "broker")]
    site: Option<String>,
    /// Output: the merged head update.
    #[arg(long, short)]
    output: PathBuf,
    /// Secret key (from `vigil keygen`) to sign the merged update with.
    #[arg(long)]
    key: PathBuf,
    /// Version of the merged head [default: one above the highest snapshot's].
    #[arg(long)]
    version: Option<u32>,
    /// Merge the snapshots that pass every check and skip the others (each named in a
    /// warning) instead of refusing the merge.
    #[arg(long)]
    skip_bad: bool,
}

impl FleetArgs {
    /// Runs the command.
    pub fn run(self) -> Result<()> {
        match self.command {
            FleetCommand::Merge(m) => m.run(),
            FleetCommand::Status(s) => s.run(),
            FleetCommand::Reports(r) => r.run(),
            FleetCommand::Push(p) => p.run(),
            FleetCommand::Bench(b) => b.run(),
        }
    }
}

impl MergeArgs {
    /// The snapshots to merge, named (file or site/device), as read: from the folder, or
    /// the retained snapshots on the broker.
    fn sources(&self) -> Result<Vec<(String, vigil_client::Result<UpdateFile>)>> {
        if let (Some(url), site) = (&self.broker, &self.site) {
            let broker = self.tls.broker(url)?;
            let found =
                vigil_mqtt::fleet_snapshots(&broker, site.as_deref(), std::time::Duration::from_secs(1))?;
            if found.is_empty() {
                bail!(
                    "no device of site {} keeps a snapshot on {}",
                    site.as_deref().unwrap_or("?"),
                    broker.name()
                );
            }
            return Ok(found
                .into_iter()
                .map(|(device, bytes)| {
                    let file = UpdateFile::for_snapshot(bytes).and_then(|f| f.check().map(|()| f));
                    let named = file.map_err(|e| e.context(format!("snapshot of {device}")));
                    (device, named)
                })
                .collect());
        }
        let folder = self.snapshots.as_ref().context("give --snapshots DIR or --broker URL --site S")?;
        let entries = std::fs::read_dir(folder)
            .with_context(|| format!("cannot read snapshot folder {}", folder.display()))?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "vup"))
            .collect();
        paths.sort();
        if paths.is_empty() {
            bail!("no .vup snapshots in {}; take them with `vigil snapshot`", folder.display());
        }
        // A file's error names the file already.
        Ok(paths.into_iter().map(|p| (p.display().to_string(), UpdateFile::read(&p))).collect())
    }

    fn run(self) -> Result<()> {
        let key = read_secret_key(&self.key)?;
        let sources = self.sources()?;
        // Every snapshot is checked before anything is signed: its file (hash, header
        // against payload, no trailing bytes), then its head against the fleet.
        let mut read = Vec::new();
        let mut bad = Vec::new();
        for (name, file) in sources {
            let snapshot = file.and_then(|f| Ok((f.head()?, f.stats()?)));
            match snapshot {
                Ok(snapshot) => read.push((name, snapshot)),
                // Each error names its file or device.
                Err(e) => bad.push(e.to_string()),
            }
        }
        let heads: Vec<_> = read.iter().map(|(_, s)| &s.0).collect();
        let verdicts = fleet::check_snapshots(&heads);
        let mut paths = Vec::new();
        let mut snapshots = Vec::new();
        for ((path, snapshot), why) in read.into_iter().zip(verdicts) {
            match why {
                Some(why) => bad.push(format!("{path}: {why}")),
                None => {
                    paths.push(path);
                    snapshots.push(snapshot);
                }
            }
        }
        if !bad.is_empty() {
            if !self.skip_bad {
                let nothing = "nothing was merged or signed (pass --skip-bad to merge the others)";
                match bad.as_slice() {
                    [one] => bail!("{one}; {nothing}"),
                    many => bail!(
                        "{} snapshots failed their checks; {nothing}:\n  {}",
                        many.len(),
                        many.join("\n  ")
                    ),
                }
            }
            for why in &bad {
                log::warn!("skipped {why}");
            }
        }
        if snapshots.is_empty() {
            bail!("no snapshot passed its checks; nothing to merge");
        }
        let weights = fleet::merge_weights(&snapshots.iter().map(|s| s.1).collect::<Vec<_>>());
        let version = match self.version {
            Some(v) => v,
            None => snapshots.iter().map(|s| s.0.version).max().unwrap_or(0) + 1,
        };
        let merged = fleet::merge(&snapshots, version).context("cannot merge the snapshots")?;
        let total: f64 = weights.iter().sum();
        for ((path, (head, stats)), w) in paths.iter().zip(&snapshots).zip(&weights) {
            println!(
                "{}: head version {}, {} labels learned, weight {:.2}",
                path,
                head.version,
                stats.labels_accepted,
                w / total
            );
        }
        let mut file = UpdateFile::for_head(&merged)?;
        file.sign(&key);
        file.write(&self.output)?;
        println!(
            "merged {} snapshots into head version {version}, signed, written to {}",
            snapshots.len(),
            self.output.display()
        );
        Ok(())
    }
}

impl StatusArgs {
    fn run(self) -> Result<()> {
        let broker = self.broker.connect()?;
        let devices = vigil_mqtt::fleet_status(&broker, self.site.as_deref(), self.quiet)?;
        if devices.is_empty() {
            println!("no device has announced itself on {} yet", broker.name());
            return Ok(());
        }
        println!(
            "{:<16} {:<16} {:<8} {:<18} {:>5} {:<6} {:>12}",
            "site", "device", "online", "model", "head", "alarm", "next report"
        );
        for d in &devices {
            let s = &d.status;
            let text = |key: &str| s[key].as_str().map_or("-".to_owned(), str::to_owned);
            let number = |key: &str| s[key].as_u64().map_or("-".to_owned(), |n| n.to_string());
            let flag = |key: &str| s[key].as_bool().map_or("-", |b| if b { "yes" } else { "no" });
            println!(
                "{:<16} {:<16} {:<8} {:<18} {:>5} {:<6} {:>12}",
                d.site,
                d.device,
                flag("online"),
                text("model"),
                number("head_version"),
                flag("alarm_active"),
                number("next_report")
            );
        }
        Ok(())
    }
}

impl ReportsArgs {
    fn run(self) -> Result<()> {
        use std::io::Write;
        let broker = self.broker.connect()?;
        let marks_path = PathBuf::from(format!("{}.marks", self.output.display()));
        let mut marks: std::collections::BTreeMap<String, u64> = match std::fs::read_to_string(&marks_path) {
            Ok(text) => serde_json::from_str(&text).with_context(|| {
                format!(
                    "{} is not a marks file (a JSON map of site/device to the next sequence)",
                    marks_path.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", marks_path.display())),
        };
        let session = self.session.clone().unwrap_or_else(|| {
            let name = self.output.file_name().map_or("reports".into(), |n| n.to_string_lossy().into_owned());
            format!("vigil-fleet-{name}")
        });
        let collected =
            vigil_mqtt::collect_reports(&broker, self.site.as_deref(), &session, &mut marks, self.quiet)?;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.output)
            .with_context(|| format!("cannot open {}", self.output.display()))?;
        for report in &collected.reports {
            writeln!(file, "{report}").with_context(|| format!("cannot write {}", self.output.display()))?;
        }
        file.sync_all().with_context(|| format!("cannot write {}", self.output.display()))?;
        // The marks move only once the reports are on disk.
        let temporary = PathBuf::from(format!("{}.tmp", marks_path.display()));
        std::fs::write(&temporary, serde_json::to_string_pretty(&marks)?)
            .and_then(|()| std::fs::rename(&temporary, &marks_path))
            .with_context(|| format!("cannot write {}", marks_path.display()))?;
        for (device, from, to) in &collected.gaps {
            log::warn!(
                "{device}: reports #{from} to #{to} never arrived (published before this session existed, or \
                 expired on the broker); pull them over serial with `vigil reports pull --since {from}`"
            );
        }
        if let Some(html) = &self.html {
            let (devices, class_names) = vigil_runtime::report_io::read_jsonl_by_device(&self.output)?;
            let ctx = crate::report_html::ReportContext {
                title: format!("Vigil fleet report: {}", self.output.display()),
                device: vec![("source".to_owned(), self.output.display().to_string())],
                class_names,
                machine: None,
                machine_class: self.machine_class,
            };
            let page =
                crate::report_html::render_groups(&devices, crate::report_html::Grouping::Devices, &ctx)?;
            std::fs::write(html, page).with_context(|| format!("cannot write {}", html.display()))?;
            println!("{} devices' reports in {}", devices.len(), html.display());
        }
        println!(
            "{} new reports from {} device(s) appended to {} ({} duplicates dropped; session {session})",
            collected.reports.len(),
            collected
                .reports
                .iter()
                .map(|r| (r["site"].to_string(), r["device"].to_string()))
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            self.output.display(),
            collected.duplicates
        );
        Ok(())
    }
}

impl PushArgs {
    fn run(self) -> Result<()> {
        let broker = self.broker.connect()?;
        let file = UpdateFile::read(&self.update)?;
        let Some(signature) = file.signature else {
            bail!(
                "{} is unsigned, and devices apply only signed updates; sign it first with `vigil sign --key KEY {}`",
                self.update.display(),
                self.update.display()
            );
        };
        let update = vigil_mqtt::UpdateMessage {
            header: file.header,
            signature: Some(signature),
            payload: file.payload,
        };
        let scope = match &self.group {
            Some(group) => format!("group {group} of site {}", self.site),
            None => format!("site {}", self.site),
        };
        let outcomes =
            vigil_mqtt::publish_update(&broker, &self.site, self.group.as_deref(), &update, self.timeout)?;
        println!(
            "published head version {} to {scope} on {} (retained: devices offline now take it when they connect)",
            update.header.version,
            broker.name()
        );
        if outcomes.is_empty() {
            println!("no device of {scope} is online to answer now");
            return Ok(());
        }
        println!("{:<16} {:<10} {:>5}  reason", "device", "outcome", "head");
        for o in &outcomes {
            let head = o.head_version.map_or("-".to_owned(), |v| v.to_string());
            println!("{:<16} {:<10} {:>5}  {}", o.device, o.outcome, head, o.reason);
        }
        let failed = outcomes.iter().filter(|o| o.outcome != "applied" && o.outcome != "already").count();
        if failed > 0 {
            bail!("{failed} of {} device(s) did not apply the update (see the table above)", outcomes.len());
        }
        Ok(())
    }
}
