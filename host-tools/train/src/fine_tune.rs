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
use vigil_core::head::PrototypeRef;
use vigil_headfit::linear::{self, LinearHead, TrainOptions};
use vigil_headfit::{mean_var, quantile};
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

/// Trains the head on `train` (validating on `val`, keeping the step of lowest validation
/// loss), recomputes the prototype and threshold from the windows of class `normal` (an
/// index into `classes`), and writes them with the head and `classes` into a copy of
/// `proto`.
#[allow(clippy::too_many_arguments)]
pub fn fine_tune_head(
    model: &VigilModel,
    proto: &ModelProto,
    classes: &[String],
    normal: usize,
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
    if normal >= classes.len() {
        bail!("the healthy class index {normal} is not one of the {} classes", classes.len());
    }
    let mut new_meta = meta.clone();
    calibrate(&mut new_meta, train, normal)?;
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
    Ok(HeadOutcome { head, onnx: encode_model(&proto), weight_change, validation })
}

/// Sets the prototype (mean and variance of the normal rows of `train`) and the threshold
/// (twice the 97.5th percentile of their scores) of `meta`; leaves them when fewer than two
/// rows are normal.
pub fn calibrate(
    meta: &mut vigil_runtime::metadata::ModelMetadata,
    train: &Embedded,
    normal: usize,
) -> Result<()> {
    let normal_rows: Vec<&Vec<f32>> =
        train.rows.iter().zip(&train.labels).filter(|(_, &l)| l == normal).map(|(r, _)| r).collect();
    if normal_rows.len() >= 2 {
        let (mean, var) = mean_var(&normal_rows);
        let prototype = PrototypeRef::new(&mean, &var).map_err(|e| anyhow::anyhow!("prototype: {e}"))?;
        let scores = normal_rows.iter().map(|r| prototype.score(r)).collect::<Result<Vec<_>, _>>()?;
        meta.alarm.threshold = 2.0 * quantile(scores, 0.975).max(f32::MIN_POSITIVE);
        meta.prototype_mean = mean;
        meta.prototype_var = var;
    }
    Ok(())
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
    normal: usize,
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
    let embedded = embed(&retrained, train, || {})?;
    calibrate(&mut meta, &embedded, normal)?;
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
    Ok(GraphOutcome { onnx, changes, validation, parity })
}
