//! `vigil status`: who a device is and what it is doing.

use anyhow::Result;
use clap::Args;
use vigil_core::hex;

/// Ask a device over its serial port who it is and what it is doing; a gateway that
/// watches several sensors gets one line per sensor.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    port: super::PortArgs,
    /// Only this sensor, in full, on a gateway that watches several.
    #[command(flatten)]
    sensor: super::SensorArg,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

impl StatusArgs {
    /// Runs the command.
    pub fn run(self) -> Result<()> {
        super::stdout_is_data(self.json);
        let mut client = self.port.connect()?;
        let info = client.info()?;
        // Without --sensor, a gateway of several sensors gets a line per sensor.
        let several = client.sensors()?.filter(|n| n.len() > 1 && !self.sensor.given());
        if let Some(names) = several {
            let mut statuses = Vec::with_capacity(names.len());
            for index in 0..names.len() {
                client.set_sensor(Some(index as u8));
                statuses.push(client.status()?);
            }
            return print_sensors(&info, &names, &statuses, self.json);
        }
        self.sensor.select(&mut client)?;
        let status = client.status()?;
        if self.json {
            let update = status
                .update
                .map(|u| serde_json::json!({"version": u.version, "received": u.received, "total": u.total}));
            let value = serde_json::json!({
                "device": info.device, "software": info.software, "model_hash": hex::encode(&info.model_hash),
                "embedding_dim": info.embedding_dim, "classes": info.class_names,
                "head_version": status.head_version, "slot_capacity": info.slot_capacity,
                "uptime_s": status.uptime_s, "windows_scored": status.windows_scored,
                "sensor_faults": status.sensor_faults, "alarm_active": status.alarm_active,
                "last_score": status.last_score, "threshold": status.threshold,
                "next_report": status.next_report, "update": update,
            });
            println!("{value}");
            return Ok(());
        }
        let alarm = if status.alarm_active { "ACTIVE" } else { "quiet" };
        print_device(&info, status.head_version, status.uptime_s);
        println!(
            "scored   {} windows, {} skipped as sensor faults",
            status.windows_scored, status.sensor_faults
        );
        println!("alarm    {alarm} (last score {:.2}, threshold {:.2})", status.last_score, status.threshold);
        println!("reports  next sequence {}", status.next_report);
        if let Some(u) = status.update {
            println!("update   receiving version {}: {} of {} bytes", u.version, u.received, u.total);
        }
        Ok(())
    }
}

/// The status of a gateway that watches several sensors: the device, then a line per
/// sensor, alarms first.
fn print_sensors(
    info: &vigil_client::client::DeviceIdentity,
    names: &[String],
    statuses: &[vigil_core::wire::Status],
    json: bool,
) -> Result<()> {
    let head_version = statuses.first().map_or(info.head_version, |s| s.head_version);
    if json {
        let sensors: Vec<_> = names
            .iter()
            .zip(statuses)
            .map(|(name, s)| {
                serde_json::json!({
                    "sensor": name, "windows_scored": s.windows_scored, "sensor_faults": s.sensor_faults,
                    "alarm_active": s.alarm_active, "last_score": s.last_score, "threshold": s.threshold,
                    "next_report": s.next_report,
                })
            })
            .collect();
        let update = statuses
            .first()
            .and_then(|s| s.update)
            .map(|u| serde_json::json!({"version": u.version, "received": u.received, "total": u.total}));
        let value = serde_json::json!({
            "device": info.device, "software": info.software, "model_hash": hex::encode(&info.model_hash),
            "embedding_dim": info.embedding_dim, "classes": info.class_names,
            "head_version": head_version, "slot_capacity": info.slot_capacity,
            "uptime_s": statuses.first().map_or(0, |s| s.uptime_s), "update": update, "sensors": sensors,
        });
        println!("{value}");
        return Ok(());
    }
    let active = statuses.iter().filter(|s| s.alarm_active).count();
    print_device(info, head_version, statuses.first().map_or(0, |s| s.uptime_s));
    println!("sensors  {}, {active} with an active alarm", names.len());
    let width = names.iter().map(String::len).max().unwrap_or(6).max(6);
    println!(
        "  {:<width$}  {:<6}  {:>10}  {:>9}  {:>8}  {:>8}  {:>7}",
        "sensor", "alarm", "last score", "threshold", "windows", "faults", "next #"
    );
    let mut order: Vec<usize> = (0..names.len()).collect();
    order.sort_by_key(|&i| !statuses[i].alarm_active);
    for i in order {
        let s = &statuses[i];
        println!(
            "  {:<width$}  {:<6}  {:>10.2}  {:>9.2}  {:>8}  {:>8}  {:>7}",
            names[i],
            if s.alarm_active { "ACTIVE" } else { "quiet" },
            s.last_score,
            s.threshold,
            s.windows_scored,
            s.sensor_faults,
            s.next_report
        );
    }
    if let Some(u) = statuses.first().and_then(|s| s.update) {
        println!("update   receiving version {}: {} of {} bytes", u.version, u.received, u.total);
    }
    Ok(())
}

/// The lines that say who the device is and what it runs.
fn print_device(info: &vigil_client::client::DeviceIdentity, head_version: u32, uptime_s: u32) {
    println!("device   {} ({})", info.device, info.software);
    println!(
        "model    {} ({}-d embedding; classes {})",
        &hex::encode(&info.model_hash)[..16],
        info.embedding_dim,
        info.class_names.join(", ")
    );
    println!("head     version {head_version}");
    println!("uptime   {uptime_s} s");
}
