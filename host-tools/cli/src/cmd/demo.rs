//! `vigil demo`: a machine runs healthy, develops an outer-race fault, and the shipped
//! model catches it. No hardware, no download.

use crate::report_html::{render, MachineFrequencies, ReportContext};
use anyhow::{Context, Result};
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use vigil_core::report::ReportKind;
use vigil_runtime::input::SampleSource;
use vigil_runtime::report_io::{describe, finding_label, report_json};
use vigil_runtime::stream::{run_stream, StreamOptions};
use vigil_sim::{FaultConfig, FaultKind, MachineConfig, Simulator};

/// Simulate a pump that runs healthy and then develops an outer-race bearing fault, run
/// the shipped model over it, and show when the alarm fires relative to fault onset.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Folder for the report store and a JSON-lines copy of the reports.
    #[arg(long, default_value = "vigil-demo")]
    out: PathBuf,
    /// Seconds of healthy running before the fault starts.
    #[arg(long, default_value_t = 40.0)]
    onset: f64,
    /// Seconds of running after onset.
    #[arg(long, default_value_t = 20.0)]
    after: f64,
    /// Random seed of the simulated machine.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// ONNX model with Vigil metadata [default: the built-in reference model, bearing-cnn-v3].
    #[arg(long)]
    model: Option<PathBuf>,
}

/// Feeds the simulator to the pipeline as if it were a sensor.
struct SimSource {
    sim: Simulator,
    frames_left: usize,
}

impl SampleSource for SimSource {
    fn channels(&self) -> Option<usize> {
        Some(self.sim.machine().channels)
    }

    fn sample_rate_hz(&self) -> Option<f64> {
        Some(self.sim.machine().sample_rate_hz)
    }

    fn read_chunk(&mut self, out: &mut Vec<f32>, max_frames: usize) -> vigil_runtime::Result<bool> {
        let n = max_frames.min(self.frames_left);
        out.clear();
        out.resize(n * self.sim.machine().channels, 0.0);
        self.sim.fill(out);
        self.frames_left -= n;
        Ok(n > 0)
    }
}

impl DemoArgs {
    /// Runs the command.
    pub fn run(self) -> Result<()> {
        let model = vigil_runtime::builtin::load_model(self.model.as_deref())?;
        let meta = model.metadata().clone();
        let model_name = model.path().display().to_string();
        let machine = MachineConfig::reference(meta.sample_rate_hz, meta.channels);
        let bpfo = f64::from(machine.bearing.fault_orders().bpfo) * machine.shaft_hz;
        let (shaft_hz, bearing) = (machine.shaft_hz as f32, machine.bearing);
        let fault = FaultConfig {
            kind: FaultKind::OuterRace,
            severity: 0.35,
            onset_s: self.onset,
            growth_per_s: 0.01,
        };
        println!(
            "Vigil demo: pump at {:.0} rpm, 6205 bearing (BPFO {bpfo:.1} Hz), sampled at {} Hz.",
            machine.shaft_hz * 60.0,
            meta.sample_rate_hz
        );
        println!(
            "It runs healthy for {:.0} s, then an outer-race spall appears (severity {:.2}, growing {:.2}/s).",
            self.onset, fault.severity, fault.growth_per_s
        );
        println!(
            "Model: {} ({} classes, window {} samples, hop {}).\n",
            model.path().display(),
            meta.class_names.len(),
            meta.window,
            meta.hop
        );
        let total = self.onset + self.after;
        let source = SimSource {
            sim: Simulator::new(machine, fault, self.seed),
            frames_left: (total * meta.sample_rate_hz) as usize,
        };
        std::fs::create_dir_all(&self.out)
            .with_context(|| format!("cannot create report folder {}", self.out.display()))?;
        let jsonl_path = self.out.join("reports.jsonl");
        let mut jsonl = std::fs::File::create(&jsonl_path)
            .with_context(|| format!("writing {}", jsonl_path.display()))?;
        let mut first_alarm: Option<(f64, String)> = None;
        let mut false_alarms = 0;
        let onset = self.onset;
        let names = meta.class_names.clone();
        let mut reports = Vec::new();
        let summary = run_stream::<anyhow::Error>(
            model,
            Box::new(source),
            &StreamOptions::default(),
            Some(&self.out),
            |_, report| {
                writeln!(jsonl, "{}", report_json(report, &names))?;
                reports.push(report.clone());
                let rel = report.stream_time_s - onset;
                println!("  [{:+7.2} s from onset] {}", rel, describe(report, &names));
                if report.kind == ReportKind::AlarmRaised {
                    if rel < 0.0 {
                        false_alarms += 1;
                    } else if first_alarm.is_none() {
                        first_alarm = Some((rel, finding_label(report, &names)));
                    }
                }
                Ok(())
            },
            |_| Ok(()),
        )?;
        println!();
        match &first_alarm {
            Some((rel, class)) => {
                println!("Alarm fired {rel:.2} s after fault onset, classed \"{class}\".")
            }
            None => println!("No alarm fired after fault onset."),
        }
        println!("False alarms before onset: {false_alarms}.");
        println!(
            "{} windows scored over {:.0} s of signal in {:.2} s ({:.0}x real time).",
            summary.windows,
            summary.stream_seconds,
            summary.wall_seconds,
            summary.realtime_factor()
        );
        let html_path = self.out.join("report.html");
        let ctx = ReportContext {
            title: "Vigil demo: pump with a developing outer-race fault".into(),
            device: vec![
                ("machine".into(), format!("pump at {:.0} rpm, 6205 bearing", shaft_hz * 60.0)),
                ("fault".into(), format!("outer race, onset at {:.0} s", self.onset)),
                ("model".into(), model_name),
            ],
            class_names: names.clone(),
            machine: Some(MachineFrequencies {
                shaft_hz,
                faults: bearing.fault_orders().at_shaft_hz(shaft_hz),
            }),
            machine_class: crate::report_html::MachineClass::default(),
        };
        std::fs::write(&html_path, render(&reports, &ctx)?)
            .with_context(|| format!("cannot write {}", html_path.display()))?;
        println!(
            "Reports: {} (store) and {}",
            self.out.join(vigil_runtime::store::FILE_NAME).display(),
            jsonl_path.display()
        );
        println!("Technician's report (open in a browser): {}", html_path.display());
        Ok(())
    }
}
