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
}

/// Options of `vigil fleet merge`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Folder of snapshots (`*.vup`, one per device, all of the same model).
    #[arg(long)]
    snapshots: PathBuf,
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
        }
    }
}

impl MergeArgs {
    fn run(self) -> Result<()> {
        let key = read_secret_key(&self.key)?;
        let entries = std::fs::read_dir(&self.snapshots)
            .with_context(|| format!("cannot read snapshot folder {}", self.snapshots.display()))?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "vup"))
            .collect();
        paths.sort();
        if paths.is_empty() {
            bail!("no .vup snapshots in {}; take them with `vigil snapshot`", self.snapshots.display());
        }
        // Every snapshot is checked before anything is signed: its file (hash, header
        // against payload, no trailing bytes), then its head against the fleet.
        let mut read = Vec::new();
        let mut bad = Vec::new();
        for path in paths {
            let snapshot = UpdateFile::read(&path).and_then(|f| Ok((f.head()?, f.stats()?)));
            match snapshot {
                Ok(snapshot) => read.push((path, snapshot)),
                // The error names the file already.
                Err(e) => bad.push(e.to_string()),
            }
        }
        let heads: Vec<_> = read.iter().map(|(_, s)| &s.0).collect();
        let verdicts = fleet::check_snapshots(&heads);
        let mut paths = Vec::new();
        let mut snapshots = Vec::new();
        for ((path, snapshot), why) in read.into_iter().zip(verdicts) {
            match why {
                Some(why) => bad.push(format!("{}: {why}", path.display())),
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
            bail!("no snapshot in {} passed its checks; nothing to merge", self.snapshots.display());
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
                path.display(),
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
