//! Datasets users bring: a TOML manifest of labelled recordings, cut into windows by the
//! runtime's own windower (which resamples to the model's rate), split by recording.
//!
//! ```toml
//! # Paths are relative to the manifest.
//! [[recording]]
//! path = "baseline_1.csv"   # CSV, WAV or f32le (format from the extension, or `format`)
//! rate = 97656              # Hz; needed when the file does not say
//! channels = 1              # needed for f32le
//! label = "normal"          # one of the model's classes
//! split = "train"           # train, val or test; recordings without one serve any split
//! load = 270.0              # operating condition, optional
//! speed = 25.0              # shaft speed in Hz, optional
//! bearing = "NICE"          # the bearing: a designation or "N,ELEMENT,PITCH[,ANGLE_DEG]", optional
//! machine = "rig-1"         # optional
//! ```
//!
//! A window never mixes recordings, and a recording belongs to one split, so no test
//! window shares a recording with training.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use vigil_core::bearing::BearingGeometry;
use vigil_core::kinematics::{check_shaft_hz, Kinematics};
use vigil_runtime::input::{self, InputFormat};
use vigil_runtime::model::VigilModel;
use vigil_runtime::windower::{Window, Windower};

/// One labelled recording of a manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingEntry {
    /// The file, relative to the manifest.
    pub path: PathBuf,
    /// csv, wav or f32le [default: from the extension].
    pub format: Option<String>,
    /// Sample rate in Hz, when the file does not say.
    pub rate: Option<f64>,
    /// Channels (needed for f32le).
    pub channels: Option<usize>,
    /// Class name, one of the model's.
    pub label: String,
    /// train, val or test.
    pub split: Option<String>,
    /// Load (any unit).
    pub load: Option<f64>,
    /// Shaft speed in Hz.
    pub speed: Option<f64>,
    /// The bearing: a designation (`vigil_core::kinematics::CATALOGUE`) or
    /// `N,ELEMENT,PITCH[,ANGLE_DEG]`.
    pub bearing: Option<String>,
    /// Machine identifier.
    pub machine: Option<String>,
}

impl RecordingEntry {
    /// The recording's kinematics as far as given (checked when the manifest was loaded).
    pub fn kinematics(&self) -> Kinematics {
        Kinematics {
            shaft_hz: self.speed.map(|s| s as f32),
            bearing: self.bearing.as_deref().and_then(|b| BearingGeometry::parse(b).ok()),
        }
    }

    /// The operating condition, for accuracy per condition: machine, load and speed as
    /// far as given.
    pub fn condition(&self) -> String {
        let mut parts = Vec::new();
        if let Some(m) = &self.machine {
            parts.push(format!("machine {m}"));
        }
        if let Some(l) = self.load {
            parts.push(format!("load {l}"));
        }
        if let Some(s) = self.speed {
            parts.push(format!("speed {s} Hz"));
        }
        if parts.is_empty() {
            "unspecified".into()
        } else {
            parts.join(", ")
        }
    }
}

/// A manifest: its recordings and the folder their paths are relative to.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The recordings, in the order of the file.
    pub recordings: Vec<RecordingEntry>,
    /// The manifest file.
    pub path: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestFile {
    #[serde(default)]
    recording: Vec<RecordingEntry>,
}

impl Manifest {
    /// Reads a manifest.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read manifest {}", path.display()))?;
        let file: ManifestFile = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("manifest {}: {}", path.display(), e.to_string().trim_end()))?;
        if file.recording.is_empty() {
            bail!("manifest {} lists no [[recording]]", path.display());
        }
        for (i, r) in file.recording.iter().enumerate() {
            let entry = || format!("manifest {}, recording {} ({})", path.display(), i + 1, r.path.display());
            if let Some(speed) = r.speed {
                if let Err(e) = check_shaft_hz(speed as f32) {
                    bail!("{}: speed: {e}", entry());
                }
            }
            if let Some(bearing) = &r.bearing {
                if let Err(e) = BearingGeometry::parse(bearing) {
                    bail!("{}: bearing `{bearing}`: {e}", entry());
                }
            }
            if let Some(split) = &r.split {
                if !["train", "val", "test"].contains(&split.as_str()) {
                    bail!(
                        "manifest {}, recording {} ({}): split `{split}` is not train, val or test",
                        path.display(),
                        i + 1,
                        r.path.display()
                    );
                }
            }
        }
        let manifest = Manifest { recordings: file.recording, path: path.to_path_buf() };
        manifest.check_each_recording_once()?;
        Ok(manifest)
    }

    /// The one bearing the recordings name (a dataset of one machine line), or an error
    /// saying what is missing or differs.
    pub fn one_bearing(&self) -> Result<BearingGeometry> {
        let mut found: Option<(usize, BearingGeometry)> = None;
        for (i, r) in self.recordings.iter().enumerate() {
            let Some(b) = r.kinematics().bearing else {
                bail!(
                    "{}: no `bearing`; add one (such as bearing = \"6205\") or pass --bearing",
                    self.entry_name(i)
                );
            };
            match found {
                Some((first, f)) if f != b => bail!(
                    "{}: its bearing differs from recording {}'s; pass --bearing for the one to use",
                    self.entry_name(i),
                    first + 1
                ),
                Some(_) => {}
                None => found = Some((i, b)),
            }
        }
        found
            .map(|(_, b)| b)
            .ok_or_else(|| anyhow::anyhow!("manifest {} lists no recording", self.path.display()))
    }

    /// Refuses a file listed twice: with two labels it contradicts itself, in two splits
    /// it would validate or test on what it trained on.
    fn check_each_recording_once(&self) -> Result<()> {
        for (i, r) in self.recordings.iter().enumerate() {
            // The same file however written (`a.csv`, `./a.csv`, a link).
            let file = |e: &RecordingEntry| {
                let path = self.resolve(e);
                path.canonicalize().unwrap_or(path)
            };
            let Some(first) = self.recordings[..i].iter().position(|p| file(p) == file(r)) else { continue };
            let p = &self.recordings[first];
            let why = if p.label != r.label {
                format!("labelled `{}` there and `{}` here; one recording has one label", p.label, r.label)
            } else if p.split != r.split {
                let split = |s: &Option<String>| s.clone().unwrap_or_else(|| "no split".into());
                format!(
                    "in split `{}` there and `{}` here; a recording in two splits validates or tests \
                     on what it trained on",
                    split(&p.split),
                    split(&r.split)
                )
            } else {
                "listed twice; list each recording once".into()
            };
            bail!("{}: also recording {} ({}): {why}", self.entry_name(i), first + 1, p.path.display());
        }
        Ok(())
    }

    /// The recordings labelled `label` outside the test split, followed by `extra` healthy
    /// recordings (paths as given on the command line; `rate` when a file does not say
    /// its own): every healthy window a fine-tuning may learn the normal state from.
    pub fn healthy(&self, label: &str, extra: &[PathBuf], rate: Option<f64>) -> Manifest {
        let here = std::env::current_dir().unwrap_or_default();
        let base = self.path.parent().unwrap_or(Path::new("."));
        let mut recordings: Vec<RecordingEntry> = self
            .recordings
            .iter()
            .filter(|r| r.label == label && r.split.as_deref() != Some("test"))
            .map(|r| RecordingEntry { path: base.join(&r.path), ..r.clone() })
            .collect();
        recordings.extend(extra.iter().map(|path| RecordingEntry {
            path: here.join(path),
            format: None,
            rate,
            channels: None,
            label: label.to_string(),
            split: None,
            load: None,
            speed: None,
            bearing: None,
            machine: None,
        }));
        Manifest { recordings, path: here.join("healthy recordings") }
    }

    /// Reads recording `i` whole.
    pub fn read(&self, i: usize) -> Result<Recording> {
        let entry = &self.recordings[i];
        let name = self.entry_name(i);
        let path = self.resolve(entry);
        let format = match &entry.format {
            Some(f) => f.parse::<InputFormat>().with_context(|| name.clone())?,
            None => InputFormat::from_path(&path.to_string_lossy()).unwrap_or(InputFormat::Csv),
        };
        let mut source =
            input::open(&path.to_string_lossy(), format, entry.channels).with_context(|| name.clone())?;
        let mut samples = Vec::new();
        let mut chunk = Vec::new();
        while source.read_chunk(&mut chunk, 1 << 16).with_context(|| name.clone())? {
            samples.extend_from_slice(&chunk);
        }
        let channels = source.channels().unwrap_or(1);
        let Some(rate) = entry.rate.or(source.sample_rate_hz()) else {
            bail!("{name}: the file does not say its sample rate; add `rate = HZ` to the entry");
        };
        Ok(Recording { samples, channels, rate })
    }

    fn resolve(&self, entry: &RecordingEntry) -> PathBuf {
        self.path.parent().unwrap_or(Path::new(".")).join(&entry.path)
    }

    /// Names recording `i` in errors.
    fn entry_name(&self, i: usize) -> String {
        format!(
            "manifest {}, recording {} ({})",
            self.path.display(),
            i + 1,
            self.recordings[i].path.display()
        )
    }
}

/// A recording read whole.
#[derive(Debug, Clone)]
pub struct Recording {
    /// Interleaved frames.
    pub samples: Vec<f32>,
    /// Channels per frame.
    pub channels: usize,
    /// Sample rate in Hz.
    pub rate: f64,
}

/// Labelled windows of a model's shape, each knowing its recording.
#[derive(Debug, Clone, Default)]
pub struct LabelledWindows {
    /// The windows, un-normalised, channel-major.
    pub windows: Vec<Window>,
    /// Class index of each window (in the model's classes).
    pub labels: Vec<usize>,
    /// Index in the manifest of each window's recording.
    pub recordings: Vec<usize>,
    /// The operating condition of each window's recording.
    pub conditions: Vec<String>,
}

impl LabelledWindows {
    /// Number of windows.
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// Appends window `i` of `other` with its label, recording and condition.
    pub fn push_from(&mut self, other: &LabelledWindows, i: usize) {
        self.windows.push(other.windows[i].clone());
        self.labels.push(other.labels[i]);
        self.recordings.push(other.recordings[i]);
        self.conditions.push(other.conditions[i].clone());
    }
}

/// Cuts the recordings of `split` (all when `None`; entries without a split belong to
/// every split) into windows for `model`, at its window and hop, labelled by their index
/// in `classes` (the model's, or a new label set).
pub fn windows_for(
    model: &VigilModel,
    manifest: &Manifest,
    split: Option<&str>,
    classes: &[String],
) -> Result<LabelledWindows> {
    let meta = model.metadata();
    let mut set = LabelledWindows::default();
    for (i, entry) in manifest.recordings.iter().enumerate() {
        if split.is_some_and(|s| entry.split.as_deref().is_some_and(|e| e != s)) {
            continue;
        }
        let name = manifest.entry_name(i);
        let Some(label) = classes.iter().position(|c| *c == entry.label) else {
            bail!("{name}: label `{}` is not one of the classes ({})", entry.label, classes.join(", "));
        };
        let Recording { samples, channels, rate } = manifest.read(i)?;
        if channels != meta.channels {
            bail!("{name}: {channels} channel(s), the model takes {}", meta.channels);
        }
        let mut windower = Windower::new(channels, rate, meta.sample_rate_hz, meta.window, meta.hop)
            .with_context(|| {
                format!("{name}: cannot resample {rate} Hz to the model's {} Hz", meta.sample_rate_hz)
            })?;
        let before = set.len();
        windower.push(&samples, |w| set.windows.push(w));
        let cut = set.len() - before;
        if cut == 0 {
            let seconds = meta.window as f64 / meta.sample_rate_hz;
            bail!(
                "{name}: {:.3} s of signal is shorter than one window ({} samples, {seconds:.3} s)",
                samples.len() as f64 / channels as f64 / rate,
                meta.window
            );
        }
        set.labels.extend(std::iter::repeat_n(label, cut));
        set.recordings.extend(std::iter::repeat_n(i, cut));
        set.conditions.extend(std::iter::repeat_n(entry.condition(), cut));
    }
    if set.is_empty() {
        match split {
            Some(s) => bail!(
                "manifest {}: the {s} split is empty (no recording has split = \"{s}\" or none)",
                manifest.path.display()
            ),
            None => bail!("manifest {}: no windows", manifest.path.display()),
        }
    }
    Ok(set)
}
