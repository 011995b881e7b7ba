//! Supervised last-layer adaptation from technician labels.
//!
//! A label is an embedding and the class a technician found. [`LabelAdapter::learn`]:
//!
//! 1. keeps a copy of the head;
//! 2. runs `steps` SGD steps of cross-entropy on a mini-batch of the new sample and one
//!    replay sample of each class (taken in turn), plus a pull of strength `anchor`
//!    towards the shipped head (L2-SP: the head cannot wander far from what pretraining
//!    found on a handful of labels). Each step is taken in standardised coordinates
//!    `u = (e - mean) / std` of the normal-state prototype (so a dimension's scale does
//!    not set its learning rate) and normalised by `|u|^2 + 1`, then mapped back to the
//!    head over raw embeddings;
//! 3. keeps the new head only if the replay buffer is classified at least as well as
//!    before; otherwise restores the copy and tries again at half, then a quarter of the
//!    rate, and after that drops the label (a mislabel that contradicts earlier labels
//!    is refused);
//! 4. when kept and the new sample is now classified as labelled, stores it in its
//!    class's replay ring, overwriting the oldest. (A label the head cannot fit yet still
//!    moves the head, but does not enter the buffer.)
//!
//! Replay accuracy therefore never falls: a kept step leaves the old samples at least as
//! right as they were, and only right samples are added. Poisoned labels cost nothing but
//! the time of the rejected steps.
//!
//! Memory is fixed and borrowed: [`LabelAdapter::storage_len`] floats for the head, the
//! shipped head, the copy, the standardisation (mean and variance) and `per_class`
//! replay embeddings per class, plus a few counters. For the shipped model (192 x 4) with
//! 16 per class that is 3 x 772 + 2 x 192 + 64 x 192 floats: 59 KiB.

use super::AdaptationStats;
use crate::error::check_len;
use crate::head::{argmax, softmax_in_place, HeadRef, PrototypeRef, VARIANCE_FLOOR};
use crate::update::MAX_EMBEDDING;
use crate::{CoreError, MAX_CLASSES};
use serde::{Deserialize, Serialize};

/// How labels change the head.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LabelConfig {
    /// Step size, relative to the sample's squared length.
    pub learning_rate: f32,
    /// SGD steps per label.
    pub steps: u8,
    /// Strength of the pull towards the shipped head (L2-SP), per step.
    pub anchor: f32,
    /// Replay embeddings kept per class.
    pub per_class: u8,
}

impl Default for LabelConfig {
    /// Rate 1, 4 steps, anchor 0.01, 16 replay samples per class.
    fn default() -> Self {
        LabelConfig { learning_rate: 1.0, steps: 4, anchor: 0.01, per_class: 16 }
    }
}

/// What a label did.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LabelOutcome {
    /// The steps were kept.
    Accepted {
        /// Whether the sample is now classified as labelled and joined the replay buffer.
        stored: bool,
        /// Accuracy on the replay buffer (1 while it is empty).
        replay_accuracy: f32,
    },
    /// The steps were undone and the label dropped.
    RolledBack {
        /// Replay correct before the steps.
        correct_before: u16,
        /// Replay correct after them.
        correct_after: u16,
    },
}

/// The counters of a [`LabelAdapter`], saved beside its storage so that it can resume.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelProgress {
    /// Replay samples held per class.
    pub filled: [u8; MAX_CLASSES],
    /// Next replay slot to write per class.
    pub next: [u8; MAX_CLASSES],
    /// Which replay sample of each class the next step uses.
    pub turn: u8,
    /// Replay samples the head classifies as labelled.
    pub correct: u16,
    /// Labels kept.
    pub accepted: u32,
    /// Labels rolled back.
    pub rejected: u32,
}

/// A head that learns from labels, over borrowed storage `S` (a `Vec<f32>` on a gateway,
/// a static array on a microcontroller) of [`LabelAdapter::storage_len`] floats.
#[derive(Debug, Clone)]
pub struct LabelAdapter<S> {
    config: LabelConfig,
    dim: usize,
    classes: usize,
    storage: S,
    progress: LabelProgress,
}

/// Offsets of the regions in the storage.
struct Layout {
    head: usize,
    shipped: usize,
    copy: usize,
    mean: usize,
    inv_var: usize,
    replay: usize,
    end: usize,
}

impl Layout {
    fn new(dim: usize, classes: usize, per_class: usize) -> Self {
        let head_len = classes * dim + classes;
        Layout {
            head: 0,
            shipped: head_len,
            copy: 2 * head_len,
            mean: 3 * head_len,
            inv_var: 3 * head_len + dim,
            replay: 3 * head_len + 2 * dim,
            end: 3 * head_len + 2 * dim + classes * per_class * dim,
        }
    }
}

impl<S: AsRef<[f32]> + AsMut<[f32]>> LabelAdapter<S> {
    /// Floats of storage a head of `classes x dim` with `per_class` replay samples needs.
    pub fn storage_len(dim: usize, classes: usize, per_class: usize) -> usize {
        Layout::new(dim, classes, per_class).end
    }

    /// Starts from `shipped`, which is also the anchor of L2-SP, standardising steps by
    /// `scale` (the normal-state prototype of the embeddings).
    pub fn new(
        config: LabelConfig,
        shipped: HeadRef<'_>,
        scale: PrototypeRef<'_>,
        mut storage: S,
    ) -> Result<Self, CoreError> {
        let (dim, classes) = (shipped.dim(), shipped.classes());
        let valid = config.learning_rate > 0.0 && config.anchor >= 0.0 && config.anchor < 1.0;
        if !valid || config.steps == 0 || config.per_class == 0 {
            return Err(CoreError::NotPositive);
        }
        if dim > MAX_EMBEDDING {
            return Err(CoreError::LengthMismatch { expected: MAX_EMBEDDING, actual: dim });
        }
        let layout = Layout::new(dim, classes, usize::from(config.per_class));
        check_len(layout.end, storage.as_ref().len())?;
        check_len(dim, scale.mean().len())?;
        let s = storage.as_mut();
        s[layout.mean..layout.inv_var].copy_from_slice(scale.mean());
        for (v, &x) in s[layout.inv_var..layout.replay].iter_mut().zip(scale.var()) {
            *v = 1.0 / (x + VARIANCE_FLOOR);
        }
        let head_len = classes * dim + classes;
        for start in [layout.head, layout.shipped, layout.copy] {
            s[start..start + classes * dim].copy_from_slice(shipped.weights());
            s[start + classes * dim..start + head_len].copy_from_slice(shipped.bias());
        }
        Ok(LabelAdapter { config, dim, classes, storage, progress: LabelProgress::default() })
    }

    /// Resumes an adapter from its saved `storage` and `progress`, checking that they fit
    /// `dim`, `classes` and `config` and that every value is finite.
    pub fn resume(
        config: LabelConfig,
        dim: usize,
        classes: usize,
        storage: S,
        progress: LabelProgress,
    ) -> Result<Self, CoreError> {
        if classes == 0 || classes > MAX_CLASSES {
            return Err(CoreError::ClassCount(classes));
        }
        if dim > MAX_EMBEDDING {
            return Err(CoreError::LengthMismatch { expected: MAX_EMBEDDING, actual: dim });
        }
        check_len(Layout::new(dim, classes, usize::from(config.per_class)).end, storage.as_ref().len())?;
        if storage.as_ref().iter().any(|x| !x.is_finite()) {
            return Err(CoreError::NotFinite);
        }
        let per_class = config.per_class;
        let counts_fit = (0..MAX_CLASSES).all(|c| {
            let used = c < classes;
            progress.filled[c] <= if used { per_class } else { 0 } && (progress.next[c] < per_class || !used)
        });
        let total: u16 = progress.filled.iter().map(|&f| u16::from(f)).sum();
        if !counts_fit || progress.correct > total {
            return Err(CoreError::LengthMismatch {
                expected: usize::from(total),
                actual: usize::from(progress.correct),
            });
        }
        Ok(LabelAdapter { config, dim, classes, storage, progress })
    }

    /// The counters to save beside [`LabelAdapter::storage`].
    pub fn progress(&self) -> LabelProgress {
        self.progress
    }

    /// The storage: head, shipped head, copy, standardisation and replay buffer.
    pub fn storage(&self) -> &[f32] {
        self.storage.as_ref()
    }

    fn layout(&self) -> Layout {
        Layout::new(self.dim, self.classes, usize::from(self.config.per_class))
    }

    /// The head as adapted so far.
    pub fn head(&self) -> HeadRef<'_> {
        let s = self.storage.as_ref();
        let w = self.classes * self.dim;
        // The dimensions were checked by `new`.
        HeadRef::new(&s[..w], &s[w..w + self.classes], self.dim, self.classes)
            .unwrap_or_else(|_| unreachable_head())
    }

    /// Replay samples held.
    pub fn replay_len(&self) -> usize {
        self.progress.filled.iter().map(|&f| usize::from(f)).sum()
    }

    /// Fraction of the replay buffer the head classifies as labelled (`None` when empty).
    pub fn replay_accuracy(&self) -> Option<f32> {
        let n = self.replay_len();
        (n > 0).then(|| f32::from(self.progress.correct) / n as f32)
    }

    /// Adds the label counts to `stats`.
    pub fn add_counts(&self, stats: &mut AdaptationStats) {
        stats.labels_accepted = stats.labels_accepted.saturating_add(self.progress.accepted);
        stats.labels_rejected = stats.labels_rejected.saturating_add(self.progress.rejected);
    }

    fn replay_sample(&self, class: usize, index: usize) -> &[f32] {
        let start = self.layout().replay + (class * usize::from(self.config.per_class) + index) * self.dim;
        &self.storage.as_ref()[start..start + self.dim]
    }

    fn predicts(&self, embedding: &[f32], class: usize) -> bool {
        let mut logits = [0.0f32; MAX_CLASSES];
        let logits = &mut logits[..self.classes];
        // The lengths are the adapter's own.
        let _ = self.head().logits(embedding, logits);
        argmax(logits) == Some(class)
    }

    /// Replay samples the head classifies as labelled.
    fn count_correct(&self) -> u16 {
        let mut correct = 0u16;
        for class in 0..self.classes {
            for i in 0..usize::from(self.progress.filled[class]) {
                correct += u16::from(self.predicts(self.replay_sample(class, i), class));
            }
        }
        correct
    }

    /// One SGD step of cross-entropy on the embedding at `at` in the storage (a replay
    /// sample) or, when `None`, on `embedding`, labelled `class`, in standardised
    /// coordinates (see the module docs).
    fn sgd(&mut self, at: Option<usize>, embedding: &[f32], class: usize, scale: f32) {
        let layout = self.layout();
        let (dim, classes) = (self.dim, self.classes);
        let mut p = [0.0f32; MAX_CLASSES];
        let p = &mut p[..classes];
        let (head, rest) = self.storage.as_mut().split_at_mut(layout.shipped);
        let rest = &rest[layout.mean - layout.shipped..];
        let (mean, rest) = rest.split_at(dim);
        let (inv_var, replay) = rest.split_at(dim);
        let e = match at {
            Some(start) => &replay[start - layout.replay..start - layout.replay + dim],
            None => embedding,
        };
        let (w, b) = head.split_at_mut(classes * dim);
        for (k, pk) in p.iter_mut().enumerate() {
            *pk = b[k] + crate::head::dot(&w[k * dim..(k + 1) * dim], e);
        }
        softmax_in_place(p);
        // The step direction d = (e - mean) / var; |u|^2 = d . (e - mean) and
        // u . (mean / std) = d . mean, with u = (e - mean) / std.
        let mut direction = [0.0f32; MAX_EMBEDDING];
        let direction = &mut direction[..dim];
        for (((d, &x), &m), &iv) in direction.iter_mut().zip(e).zip(mean).zip(inv_var) {
            *d = (x - m) * iv;
        }
        let shift = crate::head::dot(direction, mean);
        let centred_norm = crate::head::dot(direction, e) - shift;
        let rate = scale * self.config.learning_rate / (1.0 + centred_norm);
        for k in 0..classes {
            let g = rate * (p[k] - if k == class { 1.0 } else { 0.0 });
            for (wi, &d) in w[k * dim..(k + 1) * dim].iter_mut().zip(direction.iter()) {
                *wi -= g * d;
            }
            b[k] -= g * (1.0 - shift);
        }
    }

    /// Pulls the head towards the shipped one by `anchor`.
    fn pull_to_shipped(&mut self) {
        let layout = self.layout();
        let a = self.config.anchor;
        let s = self.storage.as_mut();
        let (head, rest) = s.split_at_mut(layout.shipped);
        for (h, &w0) in head.iter_mut().zip(&rest[..layout.shipped]) {
            *h -= a * (*h - w0);
        }
    }

    fn copy_head(&mut self, from: usize, to: usize) {
        let len = self.classes * self.dim + self.classes;
        self.storage.as_mut().copy_within(from..from + len, to);
    }

    /// `steps` SGD steps at `scale` times the learning rate (see the module docs).
    fn steps(&mut self, embedding: &[f32], class: usize, scale: f32) {
        let replay = self.layout().replay;
        let per_class = usize::from(self.config.per_class);
        for _ in 0..self.config.steps {
            self.sgd(None, embedding, class, scale);
            for c in 0..self.classes {
                let filled = usize::from(self.progress.filled[c]);
                if filled > 0 {
                    let i = usize::from(self.progress.turn) % filled;
                    self.sgd(Some(replay + (c * per_class + i) * self.dim), &[], c, scale);
                }
            }
            self.progress.turn = self.progress.turn.wrapping_add(1);
            self.pull_to_shipped();
        }
    }

    /// Learns that `embedding` is of class `class`, or rolls back (see the module docs).
    pub fn learn(&mut self, embedding: &[f32], class: usize) -> Result<LabelOutcome, CoreError> {
        check_len(self.dim, embedding.len())?;
        if class >= self.classes {
            return Err(CoreError::ClassCount(class + 1));
        }
        if embedding.iter().any(|x| !x.is_finite()) {
            return Err(CoreError::NotFinite);
        }
        let layout = self.layout();
        let before = self.progress.correct;
        self.copy_head(layout.head, layout.copy);
        let mut scale = 1.0;
        let after = loop {
            self.steps(embedding, class, scale);
            let after = self.count_correct();
            if after >= before {
                break after;
            }
            self.copy_head(layout.copy, layout.head);
            if scale <= 0.25 {
                self.progress.rejected = self.progress.rejected.saturating_add(1);
                return Ok(LabelOutcome::RolledBack { correct_before: before, correct_after: after });
            }
            scale *= 0.5;
        };
        self.progress.accepted = self.progress.accepted.saturating_add(1);
        self.progress.correct = after;
        let stored = self.predicts(embedding, class);
        if stored {
            self.store(embedding, class);
        }
        Ok(LabelOutcome::Accepted { stored, replay_accuracy: self.replay_accuracy().unwrap_or(1.0) })
    }

    /// Takes `embedding` out of `class`'s replay ring, when it is there: a technician
    /// corrected the verdict that put it there. The head keeps its weights; learning the
    /// corrected label ([`LabelAdapter::learn`]) then pulls it to the right class.
    /// Returns whether the sample was held.
    pub fn forget(&mut self, embedding: &[f32], class: usize) -> bool {
        if class >= self.classes {
            return false;
        }
        let filled = usize::from(self.progress.filled[class]);
        let Some(slot) = (0..filled).find(|&i| self.replay_sample(class, i) == embedding) else {
            return false;
        };
        // The last held sample fills the hole; the next sample goes where the last was.
        let per_class = usize::from(self.config.per_class);
        let base = self.layout().replay + class * per_class * self.dim;
        let (hole, last) = (base + slot * self.dim, base + (filled - 1) * self.dim);
        self.storage.as_mut().copy_within(last..last + self.dim, hole);
        self.progress.filled[class] = (filled - 1) as u8;
        self.progress.next[class] = (filled - 1) as u8;
        self.progress.correct = self.count_correct();
        true
    }

    /// Puts a correctly classified sample into its class's replay ring.
    fn store(&mut self, embedding: &[f32], class: usize) {
        let per_class = usize::from(self.config.per_class);
        let slot = usize::from(self.progress.next[class]);
        let overwritten_correct = usize::from(self.progress.filled[class]) == per_class
            && self.predicts(self.replay_sample(class, slot), class);
        let start = self.layout().replay + (class * per_class + slot) * self.dim;
        self.storage.as_mut()[start..start + self.dim].copy_from_slice(embedding);
        self.progress.next[class] = ((slot + 1) % per_class) as u8;
        self.progress.filled[class] = (usize::from(self.progress.filled[class]) + 1).min(per_class) as u8;
        self.progress.correct = self.progress.correct + 1 - u16::from(overwritten_correct);
    }
}

fn unreachable_head() -> HeadRef<'static> {
    // A 1 x 0 head: only reached if the storage was resized behind the adapter's back,
    // which its API does not allow.
    static EMPTY: [f32; 1] = [0.0];
    HeadRef::new(&[], &EMPTY, 0, 1).unwrap_or_else(|_| unreachable_head())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    const DIM: usize = 8;
    const CLASSES: usize = 3;

    /// Class c's embeddings sit around a centre that the shipped head gets wrong for
    /// classes 1 and 2 (they look like class 0 to it).
    fn sample(rng: &mut impl Rng, class: usize) -> [f32; DIM] {
        core::array::from_fn(|i| {
            let centre = if i == class + 2 { 3.0 } else { 1.0 };
            centre + rng.gen_range(-0.3..0.3)
        })
    }

    fn shipped() -> ([f32; CLASSES * DIM], [f32; CLASSES]) {
        let mut w = [0.0; CLASSES * DIM];
        w[..DIM].iter_mut().for_each(|x| *x = 0.5);
        (w, [0.0; CLASSES])
    }

    fn accuracy<S: AsRef<[f32]> + AsMut<[f32]>>(
        adapter: &LabelAdapter<S>,
        set: &[([f32; DIM], usize)],
    ) -> f32 {
        let hits = set.iter().filter(|(e, c)| adapter.predicts(e, *c)).count();
        hits as f32 / set.len() as f32
    }

    #[test]
    fn a_corrected_verdict_leaves_the_window_in_the_new_class_only() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let (w, b) = shipped();
        let head = HeadRef::new(&w, &b, DIM, CLASSES).unwrap();
        let storage = vec![0.0; LabelAdapter::<Vec<f32>>::storage_len(DIM, CLASSES, 16)];
        let scale = PrototypeRef::new(&[1.0; DIM], &[0.1; DIM]).unwrap();
        let mut adapter = LabelAdapter::new(LabelConfig::default(), head, scale, storage).unwrap();
        for i in 0..12 {
            adapter.learn(&sample(&mut rng, i % CLASSES), i % CLASSES).unwrap();
        }
        // A class-1 window first called class 1 (held), then corrected to class 2.
        let window = sample(&mut rng, 1);
        adapter.learn(&window, 1).unwrap();
        let held = |a: &LabelAdapter<Vec<f32>>, class: usize| {
            (0..usize::from(a.progress.filled[class]))
                .filter(|&i| a.replay_sample(class, i) == window)
                .count()
        };
        assert_eq!(held(&adapter, 1), 1, "the first verdict's window is a replay sample");
        let before = adapter.replay_len();
        assert!(adapter.forget(&window, 1));
        assert_eq!((held(&adapter, 1), adapter.replay_len()), (0, before - 1));
        assert_eq!(adapter.progress.correct, adapter.count_correct(), "the count follows the buffer");
        assert!(!adapter.forget(&window, 1), "a window is forgotten once");
        adapter.learn(&window, 2).unwrap();
        assert_eq!(held(&adapter, 1), 0, "never held under both verdicts");
    }

    #[test]
    fn labels_teach_the_head_and_poisoned_labels_are_rolled_back() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let (w, b) = shipped();
        let head = HeadRef::new(&w, &b, DIM, CLASSES).unwrap();
        let config = LabelConfig::default();
        let storage = vec![0.0; LabelAdapter::<Vec<f32>>::storage_len(DIM, CLASSES, 16)];
        let scale = PrototypeRef::new(&[1.0; DIM], &[0.1; DIM]).unwrap();
        let mut adapter = LabelAdapter::new(config, head, scale, storage).unwrap();
        let test: Vec<_> = (0..300).map(|i| (sample(&mut rng, i % CLASSES), i % CLASSES)).collect();
        let unadapted = accuracy(&adapter, &test);
        assert!(unadapted < 0.4, "{unadapted}");
        for i in 0..30 {
            let c = i % CLASSES;
            adapter.learn(&sample(&mut rng, c), c).unwrap();
        }
        let adapted = accuracy(&adapter, &test);
        assert!(adapted > 0.95, "{unadapted} -> {adapted}");
        let start = adapter.replay_accuracy().unwrap();
        let mut rejected = 0;
        for i in 0..60 {
            // Mislabels: a class-2 window called class 0 or 1.
            let outcome = adapter.learn(&sample(&mut rng, 2), i % 2).unwrap();
            rejected += usize::from(matches!(outcome, LabelOutcome::RolledBack { .. }));
            let now = adapter.replay_accuracy().unwrap();
            assert!(now >= start - 0.01, "replay accuracy {start} -> {now} after poisoned label {i}");
        }
        let after = accuracy(&adapter, &test);
        assert!(rejected > 30, "{rejected} of 60 poisoned labels rolled back; accuracy {adapted} -> {after}");
        assert!(after > adapted - 0.15, "{adapted} -> {after}");
        let mut stats = AdaptationStats::default();
        adapter.add_counts(&mut stats);
        assert_eq!(stats.labels_accepted + stats.labels_rejected, 90);
    }

    #[test]
    fn bad_labels_are_refused() {
        let (w, b) = shipped();
        let head = HeadRef::new(&w, &b, DIM, CLASSES).unwrap();
        let len = LabelAdapter::<Vec<f32>>::storage_len(DIM, CLASSES, 4);
        let config = LabelConfig { per_class: 4, ..LabelConfig::default() };
        let scale = PrototypeRef::new(&[1.0; DIM], &[0.1; DIM]).unwrap();
        assert!(LabelAdapter::new(config, head, scale, vec![0.0; len - 1]).is_err());
        let storage = [0.0f32; 3 * (CLASSES * DIM + CLASSES) + 2 * DIM + CLASSES * 4 * DIM];
        let mut adapter = LabelAdapter::new(config, head, scale, storage).unwrap();
        assert_eq!(adapter.learn(&[0.0; DIM], 3), Err(CoreError::ClassCount(4)));
        assert!(adapter.learn(&[0.0; DIM - 1], 0).is_err());
        assert_eq!(adapter.learn(&[f32::NAN; DIM], 0), Err(CoreError::NotFinite));
        assert_eq!(adapter.head().weights(), &w);
    }
}
