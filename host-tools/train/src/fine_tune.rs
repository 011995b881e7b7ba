//! Fine-tuning the head of a pretrained model on a user's labelled recordings
//! (`vigil fine-tune --train head`): the frozen backbone runs once per window in tract,
//! the dense head is trained on the cached embeddings ([`vigil_headfit::linear`]), and only the
//! head's initialisers, the prototype, the threshold and the class names are written
//! back into the ONNX file; the graph and the rest of the metadata are kept.

use crate::manifest::LabelledWindows;
use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use tract_onnx::pb::ModelProto;
use vigil_core::adapt::site::{shrink_variance, ScoreHistogram};
use vigil_core::head::PrototypeRef;
use vigil_headfit::linear::{self, LinearHead, TrainOptions};
use vigil_headfit::{mean_var, quantile};
use vigil_runtime::adaptation::independent_windows_per_day;
use vigil_runtime::model::VigilModel;
use vigil_runtime::onnx::{encode_model, resize_initializer, set_output_width, write_metadata};
use vigil_runtime::scorer::WindowScorer;
use vigil_runtime::windower::Window;

/// Embeddings with their labels.
#[derive(Debug, Clone, Default)]
pub struct Embedded {
    /// One embedding per window.
    pub rows: Vec<Vec<f32>>,
    /// Class index per window.
    pub labels: Vec<usize>,
}

/// Runs the backbone over `set`, calling `progress` after each window.
pub fn embed(model: &VigilModel, set: &LabelledWindows, mut progress: impl FnMut()) -> Result<Embedded> {
    let mut scorer = WindowScorer::new(model.clone(), 0)?;
    let mut out = Embedded::default();
    for (window, &label) in set.windows.iter().zip(&set.labels) {
        out.rows.push(scorer.embed_and_classify(window)?.0);
        out.labels.push(label);
        progress();
    }
    Ok(out)
}

/// Indices into `set` of `n` windows of each class present, taken at random (seeded)
/// across the class's recordings. Refuses a class with fewer windows.
pub fn shot_indices(set: &LabelledWindows, classes: &[String], n: usize, seed: u64) -> Result<Vec<usize>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut picked = Vec::new();
    for (c, name) in classes.iter().enumerate() {
        let mut of_class: Vec<usize> = (0..set.len()).filter(|&i| set.labels[i] == c).collect();
        if of_class.is_empty() {
            continue;
        }
        if of_class.len() < n {
            bail!("class {name} has {} training windows, fewer than --shots {n}", of_class.len());
        }
        of_class.shuffle(&mut rng);
        picked.extend_from_slice(&of_class[..n]);
    }
    Ok(picked)
}

/// `shots` windows of each class (see [`shot_indices`]); every window when `None`.
pub fn take_shots(
    set: &LabelledWindows,
    classes: &[String],
    shots: Option<usize>,
    seed: u64,
) -> Result<LabelledWindows> {
    let Some(n) = shots else { return Ok(set.clone()) };
    let mut out = LabelledWindows::default();
    for i in shot_indices(set, classes, n, seed)? {
        out.push_from(set, i);
    }
    Ok(out)
}

/// What [`fine_tune_head`] produced.
#[derive(Debug)]
pub struct HeadOutcome {
    /// The trained head (over raw embeddings).
    pub head: LinearHead,
    /// How the prototype and threshold were set.
    pub calibration: Calibration,
    /// The fine-tuned model, encoded.
    pub onnx: Vec<u8>,
    /// Relative change of the head weights, `|W' - W| / |W|` (`None` when resized).
    pub weight_change: Option<f64>,
    /// Validation figures, when validated.
    pub validation: Option<Validation>,
}

/// How the head did on the validation windows.
#[derive(Debug, Clone, Copy)]
pub struct Validation {
    /// Loss before the first step (the untrained head).
    pub first_loss: f64,
    /// Loss at the kept step.
    pub best_loss: f64,
    /// Accuracy at the kept step.
    pub accuracy: f64,
    /// The kept step (lowest validation loss).
    pub step: usize,
}

/// The healthy side of a fine-tuning: which class is healthy, every healthy window there is
/// (not only the shots), and the false-alarm rate the threshold is set for.
#[derive(Debug)]
pub struct HealthySide<'a, H> {
    /// Index of the healthy class in the classes.
    pub normal: usize,
    /// The healthy windows ([`LabelledWindows`]) or their embeddings ([`HealthyEmbeddings`]).
    pub healthy: &'a H,
    /// False alarms per day the threshold is calibrated to.
    pub false_alarms_per_day: f32,
}

// By hand: a derive would ask `H: Copy`, and only the reference is copied.
impl<H> Clone for HealthySide<'_, H> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<H> Copy for HealthySide<'_, H> {}

/// Trains the head on `train` (validating on `val`, keeping the step of lowest validation
/// loss), recomputes the prototype and threshold from every healthy window ([`calibrate`]),
/// and writes them with the head and `classes` into a copy of `proto`.
#[allow(clippy::too_many_arguments)]
pub fn fine_tune_head(
    model: &VigilModel,
    proto: &ModelProto,
    classes: &[String],
    side: HealthySide<'_, HealthyEmbeddings>,
    train: &Embedded,
    val: Option<&Embedded>,
    options: TrainOptions,
    mut on_step: impl FnMut(usize, f32, f64),
) -> Result<HeadOutcome> {
    let meta = model.metadata();
    let mut best: Option<(Validation, LinearHead)> = None;
    let head = linear::fit(&train.rows, &train.labels, classes.len(), options, |step, head| {
        let loss = head.losses.last().copied().unwrap_or(f32::NAN);
        let accuracy = head.accuracy(&train.rows, &train.labels);
        on_step(step, loss, accuracy);
        if let Some(v) = val {
            let val_loss = head.loss(&v.rows, &v.labels);
            if best.as_ref().is_none_or(|(b, _)| val_loss < b.best_loss) {
                let first_loss = best.as_ref().map_or(f64::NAN, |(b, _)| b.first_loss);
                let accuracy = head.accuracy(&v.rows, &v.labels);
                best = Some((Validation { first_loss, best_loss: val_loss, accuracy, step }, head.clone()));
            }
        }
    })?;
    // The untrained head scores every class alike: its loss is ln(classes).
    let untrained = (classes.len() as f64).ln();
    let (head, validation) = match best {
        Some((v, best_head)) => {
            (LinearHead { losses: head.losses, ..best_head }, Some(Validation { first_loss: untrained, ..v }))
        }
        None => (head, None),
    };
    let normal = side.normal;
    if normal >= classes.len() {
        bail!("the healthy class index {normal} is not one of the {} classes", classes.len());
    }
    let mut new_meta = meta.clone();
    let calibration = calibrate(&mut new_meta, side.healthy, side.false_alarms_per_day)?;
    let resized = classes != meta.class_names.as_slice();
    new_meta.class_names = classes.to_vec();
    new_meta.normal_class = normal;
    new_meta.head_version = meta.head_version + 1;
    let mut proto = proto.clone();
    resize_initializer(&mut proto, &meta.head_weight, &[classes.len(), head.dim], &head.weights)?;
    resize_initializer(&mut proto, &meta.head_bias, &[classes.len()], &head.bias)?;
    set_output_width(&mut proto, &meta.logits_node, classes.len());
    write_metadata(&mut proto, &new_meta);
    let weight_change = (!resized).then(|| {
        let old = model.head().weights();
        let diff: f64 = old.iter().zip(&head.weights).map(|(a, b)| f64::from(a - b).powi(2)).sum();
        let norm: f64 = old.iter().map(|a| f64::from(*a).powi(2)).sum();
        (diff / norm.max(f64::MIN_POSITIVE)).sqrt()
    });
    Ok(HeadOutcome { head, onnx: encode_model(&proto), weight_change, validation, calibration })
}

/// Healthy windows' embeddings, each with the recording it came from: what the anomaly
/// side of a model (prototype and threshold) is fitted on.
#[derive(Debug, Clone, Default)]
pub struct HealthyEmbeddings {
    /// One embedding per healthy window, in stream order within each recording.
    pub rows: Vec<Vec<f32>>,
    /// Index of each window's recording.
    pub recordings: Vec<usize>,
}

impl HealthyEmbeddings {
    /// Embeds the windows of `set` labelled `normal`.
    pub fn of(
        model: &VigilModel,
        set: &LabelledWindows,
        normal: usize,
        mut progress: impl FnMut(),
    ) -> Result<Self> {
        let mut scorer = WindowScorer::new(model.clone(), 0)?;
        let mut out = HealthyEmbeddings::default();
        for ((window, &label), &recording) in set.windows.iter().zip(&set.labels).zip(&set.recordings) {
            if label == normal {
                out.rows.push(scorer.embed_and_classify(window)?.0);
                out.recordings.push(recording);
                progress();
            }
        }
        Ok(out)
    }

    /// Splits each recording in two, in stream order: its first half to learn the
    /// prototype, its second half to calibrate the threshold on windows the prototype has
    /// not seen (overlapping neighbours would flatter an interleaved split).
    fn halves(&self) -> (Vec<&Vec<f32>>, Vec<&Vec<f32>>) {
        let (mut learn, mut calibrate) = (Vec::new(), Vec::new());
        let mut recordings: Vec<usize> = self.recordings.clone();
        recordings.sort_unstable();
        recordings.dedup();
        for r in recordings {
            let rows: Vec<&Vec<f32>> =
                self.rows.iter().zip(&self.recordings).filter(|(_, &i)| i == r).map(|(row, _)| row).collect();
            let half = rows.len().div_ceil(2);
            learn.extend_from_slice(&rows[..half]);
            calibrate.extend_from_slice(&rows[half..]);
        }
        (learn, calibrate)
    }
}

/// Healthy windows below which the threshold cannot be calibrated to a false-alarm rate:
/// the tail fit needs 5 scores above the 90th percentile of the calibrating half.
pub const MIN_HEALTHY_WINDOWS: usize = 100;

/// What [`calibrate`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    /// Healthy windows used.
    pub windows: usize,
    /// The threshold set.
    pub threshold: f32,
    /// Why the threshold is only a rough guess, when too few healthy windows exist.
    pub too_few: Option<String>,
}

/// Sets `meta`'s normal-state prototype and anomaly threshold from healthy windows, the
/// way a site commissions ([`vigil_core::adapt::site`]): each recording's first half gives
/// the mean and variance (shrunk towards the average variance), its second half the
/// scores, whose tail sets the threshold a window exceeds `false_alarms_per_day` times a
/// day at the model's hop. With fewer than [`MIN_HEALTHY_WINDOWS`], every window gives the
/// prototype and the threshold is twice their 97.5th percentile, and the outcome says so.
pub fn calibrate(
    meta: &mut vigil_runtime::metadata::ModelMetadata,
    healthy: &HealthyEmbeddings,
    false_alarms_per_day: f32,
) -> Result<Calibration> {
    let n = healthy.rows.len();
    if n < 2 {
        bail!(
            "{n} healthy window(s): the normal-state prototype needs at least 2 and a calibrated \
             threshold {MIN_HEALTHY_WINDOWS}; add recordings labelled with the healthy class, or \
             pass --baseline FILE"
        );
    }
    let (learn, calibrate_rows) = if n >= MIN_HEALTHY_WINDOWS {
        healthy.halves()
    } else {
        let all: Vec<&Vec<f32>> = healthy.rows.iter().collect();
        (all.clone(), all)
    };
    let (mean, mut var) = mean_var(&learn);
    shrink_variance(&mut var);
    let prototype = PrototypeRef::new(&mean, &var).map_err(|e| anyhow::anyhow!("prototype: {e}"))?;
    let scores = calibrate_rows.iter().map(|r| prototype.score(r)).collect::<Result<Vec<_>, _>>()?;
    let (threshold, too_few) = if n >= MIN_HEALTHY_WINDOWS {
        let mut histogram = ScoreHistogram::new();
        scores.iter().for_each(|&s| histogram.add(s));
        let exceed = false_alarms_per_day as f64 / independent_windows_per_day(meta, None);
        let threshold = histogram.threshold_for(exceed as f32).unwrap_or(f32::MIN_POSITIVE);
        (threshold, None)
    } else {
        let seconds_per_window = meta.hop as f64 / meta.sample_rate_hz;
        let why = format!(
            "only {n} healthy windows; a threshold calibrated to a false-alarm rate needs at least \
             {MIN_HEALTHY_WINDOWS} (about {:.0} s of healthy signal at this model's hop), so it is \
             twice the 97.5th percentile of their scores, a rough guess. Add healthy recordings to \
             the manifest or pass --baseline FILE",
            MIN_HEALTHY_WINDOWS as f64 * seconds_per_window
        );
        (2.0 * quantile(scores, 0.975).max(f32::MIN_POSITIVE), Some(why))
    };
    meta.alarm.threshold = threshold;
    meta.prototype_mean = mean;
    meta.prototype_var = var;
    Ok(Calibration { windows: n, threshold, too_few })
}

/// Reloads the written model in tract and returns the largest difference between the
/// logits of the whole graph (tract) and of `head` on the embeddings (the trainer), over
/// `windows`.
pub fn parity(path: &Path, head: &LinearHead, windows: &[Window]) -> Result<Parity> {
    let model = VigilModel::load(path).with_context(|| format!("reloading {}", path.display()))?;
    let mut full = model.full_model()?;
    let mut scorer = WindowScorer::new(model.clone(), 0)?;
    let meta = model.metadata();
    let mut out = Parity { worst: 0.0, largest: 0.0 };
    for window in windows {
        let (embedding, _) = scorer.embed_and_classify(window)?;
        let mut normalised = window.samples.clone();
        meta.normalise(&mut normalised);
        let graph = full.run(&normalised)?;
        let mut ours = vec![0.0; head.classes];
        vigil_core::head::HeadRef::new(&head.weights, &head.bias, head.dim, head.classes)?
            .logits(&embedding, &mut ours)?;
        out.worst = graph.iter().zip(&ours).map(|(a, b)| (a - b).abs()).fold(out.worst, f32::max);
        out.largest = ours.iter().map(|v| v.abs()).fold(out.largest, f32::max);
    }
    Ok(out)
}

/// How closely a written model's logits in tract follow the trainer's head.
#[derive(Debug, Clone, Copy)]
pub struct Parity {
    /// Largest absolute difference of a logit.
    pub worst: f32,
    /// Largest absolute logit of the trainer's head: a class-means head whose training
    /// windows separate cleanly scores in the hundreds where a softmax one scores in
    /// tens, and f32 rounding scales with it.
    pub largest: f32,
}

impl Parity {
    /// The largest difference as a share of the largest logit (at least 1).
    pub fn relative(&self) -> f32 {
        self.worst / self.largest.max(1.0)
    }
}

/// What [`fine_tune_graph`] produced.
#[derive(Debug)]
pub struct GraphOutcome {
    /// The fine-tuned model, encoded.
    pub onnx: Vec<u8>,
    /// Relative L2 change of each trained initialiser.
    pub changes: Vec<(String, f64)>,
    /// Validation loss before and at the kept epoch, and that epoch.
    pub validation: Option<(f32, f32, usize)>,
    /// Largest logit difference between the written model in tract and the trainer.
    pub parity: f32,
    /// How the prototype and threshold were set with the new backbone.
    pub calibration: Calibration,
}

/// `windows` normalised as the runtime does, one `Vec` per window.
pub fn normalised<'a>(
    meta: &vigil_runtime::metadata::ModelMetadata,
    windows: impl Iterator<Item = &'a Window>,
) -> Vec<Vec<f32>> {
    windows
        .map(|w| {
            let mut s = w.samples.clone();
            meta.normalise(&mut s);
            s
        })
        .collect()
}

/// The most probable class of each window of `set`, through the runtime's path (tract
/// backbone, Rust head).
pub fn predictions(model: VigilModel, set: &LabelledWindows) -> Result<Vec<usize>> {
    let mut scorer = WindowScorer::new(model, 0)?;
    set.windows
        .iter()
        .map(|w| Ok(vigil_core::head::argmax(&scorer.embed_and_classify(w)?.1).unwrap_or(0)))
        .collect()
}

/// Trains `what` of the model `start` (an encoded ONNX whose head already fits `classes`,
/// such as [`fine_tune_head`]'s output) through its graph with candle, writes the trained
/// initialisers back, recomputes the prototype and threshold with the new backbone in
/// tract, and checks the written model against the trainer on up to 16 windows.
#[allow(clippy::too_many_arguments)]
pub fn fine_tune_graph(
    start: &[u8],
    path: &Path,
    train: &LabelledWindows,
    val: Option<&LabelledWindows>,
    side: HealthySide<'_, LabelledWindows>,
    what: super::graph::Trainable,
    reinitialise: Option<u64>,
    cfg: super::graph::GraphTraining,
    on_epoch: impl FnMut(usize, f32, f64, Option<(f32, f64)>),
) -> Result<GraphOutcome> {
    use super::graph::{batch_tensors, GraphModel};
    let mut proto = vigil_runtime::onnx::decode_model(start, path)?;
    let mut meta = vigil_runtime::onnx::read_metadata(&proto)?;
    let graph = GraphModel::new(
        &proto,
        &meta.input_name,
        &meta.logits_node,
        (&meta.head_weight, &meta.head_bias),
        what,
        reinitialise,
    )?;
    let train_x = normalised(&meta, train.windows.iter());
    let (x, y) = batch_tensors(&train_x, &train.labels, meta.channels)?;
    let val_t = val
        .map(|v| batch_tensors(&normalised(&meta, v.windows.iter()), &v.labels, meta.channels))
        .transpose()?;
    let validation =
        super::graph::train(&graph, (&x, &y), val_t.as_ref().map(|(a, b)| (a, b)), cfg, on_epoch)?;
    let changes = graph.write_into(&mut proto)?;
    // The backbone changed: the prototype and threshold are recomputed in tract.
    let retrained = VigilModel::from_bytes(&encode_model(&proto), path)?;
    let healthy = HealthyEmbeddings::of(&retrained, side.healthy, side.normal, || {})?;
    let calibration = calibrate(&mut meta, &healthy, side.false_alarms_per_day)?;
    write_metadata(&mut proto, &meta);
    let onnx = encode_model(&proto);
    let written = VigilModel::from_bytes(&onnx, path)?;
    let mut full = written.full_model()?;
    let mut parity = 0.0f32;
    let check = train_x.len().min(16);
    let ours = graph.forward(&x.narrow(0, 0, check)?)?.to_vec2::<f32>()?;
    for (window, ours) in train_x.iter().zip(&ours) {
        let theirs = full.run(window)?;
        parity = theirs.iter().zip(ours).map(|(a, b)| (a - b).abs()).fold(parity, f32::max);
    }
    Ok(GraphOutcome { onnx, changes, validation, parity, calibration })
}
