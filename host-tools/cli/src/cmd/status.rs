//! `vigil status`: who a device is and what it is doing.

use anyhow::Result;
use clap::Args;
use vigil_core::hex;

/// Ask a device over its serial port who it is and what it is doing.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    port: super::PortArgs,
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
        println!("device   {} ({})", info.device, info.software);
        println!(
            "model    {} ({}-d embedding; classes {})",
            &hex::encode(&info.model_hash)[..16],
            info.embedding_dim,
            info.class_names.join(", ")
        );
        println!("head     version {}", status.head_version);
        println!("uptime   {} s", status.uptime_s);
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
