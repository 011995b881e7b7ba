//! Fitting heads without a backbone to train: softmax regression and class means over
//! embeddings a frozen backbone computed once ([`linear`]), and the microcontroller
//! nodes' head over the DSP features of `vigil-core` ([`feature_head`]).
//!
//! No candle and no tract here, so the firmware's tests can train a node's head on
//! simulated recordings without compiling either.

pub mod feature_head;
pub mod linear;

/// Why a head could not be fitted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FitError {
    /// There was nothing to fit on.
    #[error("no labelled windows to train on")]
    NoWindows,
    /// A label names no class of the head.
    #[error("label {label} is not one of the {classes} classes")]
    Label {
        /// The label.
        label: usize,
        /// The head's number of classes.
        classes: usize,
    },
    /// The DSP features of a window could not be computed.
    #[error("features of the window at sample {start}: {source}")]
    Features {
        /// The window's first sample.
        start: usize,
        /// What the core said.
        source: vigil_core::CoreError,
    },
    /// The head, prototype or update the fit produced was refused by the core.
    #[error("the fitted head is not valid: {0}")]
    Head(#[from] vigil_core::CoreError),
}

/// Result alias of this crate.
pub type Result<T, E = FitError> = std::result::Result<T, E>;

/// Per-dimension mean and (population) variance of `rows`, accumulated in f64.
pub fn mean_var<R: AsRef<[f32]>>(rows: &[R]) -> (Vec<f32>, Vec<f32>) {
    let d = rows.first().map_or(0, |r| r.as_ref().len());
    let n = rows.len().max(1) as f64;
    let mut mean = vec![0.0f64; d];
    for r in rows {
        for (m, v) in mean.iter_mut().zip(r.as_ref()) {
            *m += f64::from(*v) / n;
        }
    }
    let mut var = vec![0.0f64; d];
    for r in rows {
        for ((s, v), m) in var.iter_mut().zip(r.as_ref()).zip(&mean) {
            *s += (f64::from(*v) - m).powi(2) / n;
        }
    }
    (mean.iter().map(|v| *v as f32).collect(), var.iter().map(|v| *v as f32).collect())
}

/// Quantile `q` of `values` (0 when empty).
pub fn quantile(mut values: Vec<f32>, q: f64) -> f32 {
    values.sort_by(f32::total_cmp);
    quantile_of_sorted(&values, q)
}

/// Quantile `q` of values already sorted ascending (0 when empty).
pub fn quantile_of_sorted(sorted: &[f32], q: f64) -> f32 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}
