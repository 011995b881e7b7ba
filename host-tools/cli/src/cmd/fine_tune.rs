//! `vigil fine-tune`: fit the pretrained model to one machine line.

use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;
use vigil_headfit::linear::{HeadKind, TrainOptions};
use vigil_train::fine_tune::{
    embed, fine_tune_graph, fine_tune_head, parity, take_shots, Calibration, HealthyEmbeddings, HealthySide,
};
use vigil_train::graph::{GraphTraining, Trainable};
use vigil_train::manifest::{windows_for, LabelledWindows, Manifest};

/// Fine-tune a pretrained model on labelled recordings of one machine line (a dataset
/// manifest, see docs/datasets.md) and write the result as a new ONNX model.
///
/// `--train head` runs the frozen backbone once per window in tract, caches the
/// embeddings and fits the dense head on them (softmax regression, full batch, with
/// weight decay, or the class means with `--head class-means`); the normal-state
/// prototype and threshold are recomputed from the normal training windows. Only the
/// head's initialisers and Vigil's metadata change; the written model is reloaded in
/// tract and its logits checked against the trainer's.
#[derive(Debug, Args)]
pub struct FineTuneArgs {
    /// Pretrained ONNX model with Vigil metadata [default: the built-in reference model, bearing-cnn-v3].
    #[arg(long)]
    model: Option<PathBuf>,
    /// Dataset manifest: recordings with split = "train" train, split = "val" validate.
    #[arg(long)]
    data: PathBuf,
    /// What to train: `head` (the dense layer on frozen embeddings, cached from one tract
    /// pass), `last:K` (the head fitted first, then the last K convolutions and the head
    /// trained together through the graph with candle) or `all` (every layer).
    #[arg(long, default_value = "head")]
    train: String,
    /// How the head is fitted on the embeddings: `softmax` (softmax regression by
    /// gradient descent, weight decay) or `class-means` (each class's mean embedding, the
    /// nearest mean wins; no steps, so --epochs and --lr do not apply to it). Whether
    /// class means carry better to operating conditions the labelled windows do not
    /// cover depends on the backbone: on MFPT recordings at unseen loads, with 10 windows
    /// per class, bearing-cnn-v2 gains about 2 points with them and bearing-cnn-v1 loses
    /// 11 (docs/results-mfpt.md). With
    /// `last:K` or `all`, the head the graph training starts from.
    #[arg(long, value_enum, default_value_t = HeadKind::Softmax)]
    head: HeadKind,
    /// Passes over the training windows [default: 600 full-batch steps for head, 40
    /// epochs through the graph].
    #[arg(long)]
    epochs: Option<usize>,
    /// Learning rate [default: 0.5 for head (gradient descent on standardised
    /// embeddings), 0.001 through the graph (AdamW, for the head)].
    #[arg(long)]
    lr: Option<f64>,
    /// Learning rate of the trained convolutions through the graph [default: --lr / 10].
    #[arg(long)]
    backbone_lr: Option<f64>,
    /// Windows per step through the graph.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// L2 weight decay.
    #[arg(long, default_value_t = 1e-3)]
    weight_decay: f64,
    /// With `--train all`: start every layer from random values instead of the
    /// pretrained ones (the from-scratch baseline).
    #[arg(long)]
    from_scratch: bool,
    /// Labelled windows per class to train on, drawn at random from the training
    /// recordings [default: all of them].
    #[arg(long)]
    shots: Option<usize>,
    /// Without val recordings in the manifest, hold out this fraction of the training
    /// recordings (whole recordings) for validation and keep the best step.
    #[arg(long, default_value_t = 0.0)]
    val_split: f64,
    /// New label set, comma-separated, replacing the model's classes (the head is
    /// resized). One of them must be the healthy class: `normal`, or the one
    /// --normal-class names.
    #[arg(long, value_delimiter = ',')]
    classes: Option<Vec<String>>,
    /// The healthy class among --classes: its windows set the normal-state prototype and
    /// the threshold, and an alarm never names it [default: `normal`; without --classes,
    /// the model's own healthy class].
    #[arg(long, value_name = "NAME")]
    normal_class: Option<String>,
    /// More healthy recordings of the machine (repeatable). The normal-state prototype
    /// and the anomaly threshold are fitted on every healthy window: the manifest's
    /// recordings of the healthy class outside the test split (all of them, not only the
    /// --shots) and these.
    #[arg(long, value_name = "FILE")]
    baseline: Vec<PathBuf>,
    /// Sample rate of the --baseline files when they do not say.
    #[arg(long, value_name = "HZ")]
    baseline_rate: Option<f64>,
    /// False alarms per day the anomaly threshold is calibrated to (needs at least 100
    /// healthy windows; with fewer the threshold is a rough guess and the command says so).
    #[arg(long, default_value_t = 1.0, value_name = "N")]
    false_alarms_per_day: f32,
    /// Seed of the shot draw and the validation hold-out.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output ONNX file.
    #[arg(long, short)]
    output: PathBuf,
}

/// Says how the anomaly side was fitted, and warns when it is a rough guess.
fn report_calibration(c: &Calibration, false_alarms_per_day: f32) {
    match &c.too_few {
        None => println!(
            "normal state: prototype and threshold from {} healthy windows, threshold {:.2} \
             (calibrated to {false_alarms_per_day} false alarm(s) per day)",
            c.windows, c.threshold
        ),
        Some(why) => log::warn!("normal state: {why}; threshold {:.2}", c.threshold),
    }
}

/// Moves every `1/fraction`-th training recording (seeded order) into validation.
fn hold_out(train: LabelledWindows, fraction: f64, seed: u64) -> (LabelledWindows, Option<LabelledWindows>) {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    if fraction <= 0.0 {
        return (train, None);
    }
    let mut recordings: Vec<usize> = train.recordings.clone();
    recordings.sort_unstable();
    recordings.dedup();
    recordings.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    let held = ((recordings.len() as f64 * fraction).round() as usize)
        .clamp(1, recordings.len().saturating_sub(1).max(1));
    let held: Vec<usize> = recordings[..held].to_vec();
    let (mut kept, mut val) = (LabelledWindows::default(), LabelledWindows::default());
    for i in 0..train.len() {
        let to = if held.contains(&train.recordings[i]) { &mut val } else { &mut kept };
        to.push_from(&train, i);
    }
    (kept, (!val.is_empty()).then_some(val))
}

impl FineTuneArgs {
    /// Runs the command.
    pub fn run(self) -> Result<()> {
        let graph_mode = match self.train.as_str() {
            "head" => None,
            other => Some(other.parse::<Trainable>().map_err(|e| anyhow::anyhow!("--train {e}"))?),
        };
        if self.from_scratch && graph_mode != Some(Trainable::All) {
            bail!("--from-scratch trains every layer: use it with --train all");
        }
        if !(0.0..1.0).contains(&self.val_split) {
            bail!("--val-split {} must be at least 0 and below 1", self.val_split);
        }
        let epochs = self.epochs.unwrap_or(if graph_mode.is_some() { 40 } else { 600 });
        let lr = self.lr.unwrap_or(if graph_mode.is_some() { 1e-3 } else { 0.5 });
        if epochs == 0 || !(lr.is_finite() && lr > 0.0) || self.batch == 0 {
            bail!("--epochs, --lr and --batch must be positive (finite numbers for --lr)");
        }
        if self.backbone_lr.is_some_and(|b| !(b.is_finite() && b > 0.0)) {
            bail!("--backbone-lr must be a finite positive number, such as 0.0001");
        }
        if !(self.false_alarms_per_day.is_finite() && self.false_alarms_per_day > 0.0) {
            bail!("--false-alarms-per-day must be a positive number, such as 1");
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            bail!("--weight-decay must be a finite number, 0 or more (such as 0.001)");
        }
        let (model, proto, _) = vigil_runtime::builtin::load_model_and_proto(self.model.as_deref())?;
        let classes = self.classes.clone().unwrap_or_else(|| model.metadata().class_names.clone());
        if classes.is_empty()
            || classes.len() > vigil_core::MAX_CLASSES
            || classes.iter().any(|c| c.trim().is_empty())
        {
            bail!("--classes needs 1 to {} non-empty names", vigil_core::MAX_CLASSES);
        }
        if let Some((i, c)) = classes.iter().enumerate().find(|(i, c)| classes[..*i].contains(c)) {
            bail!(
                "--classes names `{c}` twice (positions {} and {}); each class once",
                classes.iter().position(|x| x == c).unwrap_or(0) + 1,
                i + 1
            );
        }
        let normal_name = match (&self.normal_class, &self.classes) {
            (Some(name), _) => name.clone(),
            (None, Some(_)) => "normal".to_string(),
            (None, None) => model.metadata().class_names[model.metadata().normal_class].clone(),
        };
        let Some(normal) = classes.iter().position(|c| *c == normal_name) else {
            bail!(
                "the classes ({}) include no healthy class `{normal_name}`: without one, Vigil cannot \
                 tell a fault from normal running and every alarm would be inverted. Name the \
                 healthy class `normal` in --classes and the manifest, or pass --normal-class NAME",
                classes.join(", ")
            );
        };
        let manifest = Manifest::load(&self.data)?;
        let train = windows_for(&model, &manifest, Some("train"), &classes)?;
        let has_val = manifest.recordings.iter().any(|r| r.split.as_deref() == Some("val"));
        let (train, val) = if has_val {
            (train, Some(windows_for(&model, &manifest, Some("val"), &classes)?))
        } else {
            hold_out(train, self.val_split, self.seed)
        };
        let train = take_shots(&train, &classes, self.shots, self.seed)?;
        let healthy_manifest = manifest.healthy(&normal_name, &self.baseline, self.baseline_rate);
        let healthy_windows = windows_for(&model, &healthy_manifest, None, &classes)?;
        let present: Vec<&String> =
            classes.iter().enumerate().filter(|(c, _)| train.labels.contains(c)).map(|(_, n)| n).collect();
        if present.len() < 2 {
            bail!("the training windows hold {} class(es); fine-tuning needs at least two", present.len());
        }

        let started = Instant::now();
        let pb = super::progress_bar(
            (train.len() + val.as_ref().map_or(0, LabelledWindows::len) + healthy_windows.len()) as u64,
            "backbone (tract)",
        );
        let train_e = embed(&model, &train, || pb.inc(1))?;
        let val_e = val.as_ref().map(|v| embed(&model, v, || pb.inc(1))).transpose()?;
        let healthy = HealthyEmbeddings::of(&model, &healthy_windows, normal, || pb.inc(1))?;
        pb.finish_and_clear();
        let backbone_s = started.elapsed().as_secs_f64();
        println!(
            "backbone pass: {} training, {} validation and {} healthy windows in {backbone_s:.1} s",
            train_e.rows.len(),
            val_e.as_ref().map_or(0, |v| v.rows.len()),
            healthy.rows.len()
        );
        let embedded_side =
            HealthySide { normal, healthy: &healthy, false_alarms_per_day: self.false_alarms_per_day };

        let kind = self.head;
        let options = match graph_mode {
            None => TrainOptions {
                kind,
                steps: epochs,
                learning_rate: lr as f32,
                weight_decay: self.weight_decay as f32,
            },
            Some(_) => TrainOptions { kind, ..TrainOptions::default() },
        };
        let trained = Instant::now();
        let pb = super::progress_bar(
            (if kind == HeadKind::ClassMeans { 1 } else { options.steps }) as u64,
            "head",
        );
        let outcome = fine_tune_head(
            &model,
            &proto,
            &classes,
            embedded_side,
            &train_e,
            val_e.as_ref(),
            options,
            |step, loss, acc| {
                pb.set_position(step as u64 + 1);
                pb.set_message(format!("head: loss {loss:.4}, train accuracy {:.1}%", 100.0 * acc));
            },
        )?;
        pb.finish_and_clear();
        let losses = &outcome.head.losses;
        println!(
            "head trained in {:.2} s: loss {:.4} -> {:.4}, training accuracy {:.2}%",
            trained.elapsed().as_secs_f64(),
            losses.first().copied().unwrap_or(f32::NAN),
            losses.last().copied().unwrap_or(f32::NAN),
            100.0 * outcome.head.accuracy(&train_e.rows, &train_e.labels)
        );
        if let Some(v) = outcome.validation {
            println!(
                "validation loss {:.4} -> {:.4} (kept step {}), validation accuracy {:.2}%",
                v.first_loss,
                v.best_loss,
                v.step + 1,
                100.0 * v.accuracy
            );
        }
        if let Some(what) = graph_mode {
            let cfg = GraphTraining {
                epochs,
                lr,
                backbone_lr: self.backbone_lr.unwrap_or(lr / 10.0),
                weight_decay: self.weight_decay,
                batch: self.batch,
                patience: 8,
                seed: self.seed,
            };
            let side = HealthySide {
                normal,
                healthy: &healthy_windows,
                false_alarms_per_day: self.false_alarms_per_day,
            };
            return self.through_graph(&outcome.onnx, &model, side, &train, val.as_ref(), what, cfg);
        }
        report_calibration(&outcome.calibration, self.false_alarms_per_day);
        std::fs::write(&self.output, &outcome.onnx)
            .with_context(|| format!("cannot write {}", self.output.display()))?;
        let check: Vec<_> = train.windows.iter().take(16).cloned().collect();
        let p = parity(&self.output, &outcome.head, &check)?;
        println!(
            "parity: largest logit difference, tract vs trainer, over {} windows: {:.2e} ({:.1e} of the \
             largest logit, {:.1})",
            check.len(),
            p.worst,
            p.relative(),
            p.largest
        );
        if p.relative() > 1e-3 {
            bail!(
                "the written model disagrees with the trainer by {:.2e}; {} is not usable",
                p.worst,
                self.output.display()
            );
        }
        match outcome.weight_change {
            Some(change) => {
                println!("changed: head weights by {:.1}% (relative L2), backbone 0%", 100.0 * change)
            }
            None => {
                println!("changed: head replaced for classes {} (resized), backbone 0%", classes.join(", "))
            }
        }
        println!(
            "written {} ({} bytes), head version {}",
            self.output.display(),
            outcome.onnx.len(),
            model.metadata().head_version + 1
        );
        Ok(())
    }

    /// Trains `what` through the graph of `start` (the head already fitted, class `normal`
    /// healthy) and writes it.
    #[allow(clippy::too_many_arguments)]
    fn through_graph(
        &self,
        start: &[u8],
        model: &vigil_runtime::model::VigilModel,
        side: HealthySide<'_, LabelledWindows>,
        train: &LabelledWindows,
        val: Option<&LabelledWindows>,
        what: Trainable,
        cfg: GraphTraining,
    ) -> Result<()> {
        let started = Instant::now();
        let pb =
            super::progress_bar(cfg.epochs as u64, &format!("{} through the graph (candle)", self.train));
        let reinitialise = self.from_scratch.then_some(self.seed);
        let outcome = fine_tune_graph(
            start,
            model.path(),
            train,
            val,
            side,
            what,
            reinitialise,
            cfg,
            |epoch, loss, acc, v| {
                pb.set_position(epoch as u64);
                let v = v.map_or(String::new(), |(l, a)| {
                    format!(", validation loss {l:.4}, accuracy {:.1}%", 100.0 * a)
                });
                pb.set_message(format!("epoch {epoch}: loss {loss:.4}, accuracy {:.1}%{v}", 100.0 * acc));
            },
        )?;
        pb.finish_and_clear();
        println!("trained {} through the graph in {:.1} s", self.train, started.elapsed().as_secs_f64());
        match outcome.validation {
            Some((first, _, 0)) => {
                println!("validation loss {first:.4}: no epoch improved on the start, which is kept")
            }
            Some((first, best, epoch)) => {
                println!("validation loss {first:.4} -> {best:.4} (kept epoch {epoch})")
            }
            None => {}
        }
        report_calibration(&outcome.calibration, side.false_alarms_per_day);
        std::fs::write(&self.output, &outcome.onnx)
            .with_context(|| format!("cannot write {}", self.output.display()))?;
        let windows = train.len().min(16);
        println!(
            "parity: largest logit difference, tract vs trainer, over {windows} windows: {:.2e}",
            outcome.parity
        );
        if outcome.parity > 1e-3 {
            bail!(
                "the written model disagrees with the trainer by {:.2e}; {} is not usable",
                outcome.parity,
                self.output.display()
            );
        }
        if self.from_scratch {
            println!(
                "changed (relative L2 against the pretrained values; training started from random ones):"
            );
        } else {
            println!("changed (relative L2 against the fitted head and the pretrained backbone):");
        }
        for (name, change) in &outcome.changes {
            println!("  {name}: {:.2}%", 100.0 * change);
        }
        println!("written {} ({} bytes)", self.output.display(), outcome.onnx.len());
        Ok(())
    }
}
