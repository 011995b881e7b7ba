//! The one error type of `vigil-core`.

use core::fmt;

/// Why a core operation refused its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum CoreError {
    /// A slice did not have the length the operation needs.
    LengthMismatch {
        /// Length the operation expected.
        expected: usize,
        /// Length it was given.
        actual: usize,
    },
    /// More classes than [`crate::MAX_CLASSES`], or none at all.
    ClassCount(usize),
    /// A value that must be finite and positive (a variance, a scale, a rate) was not.
    NotPositive,
    /// A value that must be finite (a weight, a bias) was NaN or infinite.
    NotFinite,
    /// An FFT length that is not a power of two (or is below 2).
    NotPowerOfTwo(usize),
    /// More values than a head update carries.
    TooLarge {
        /// What was too large (the embedding, the head, the bias).
        what: &'static str,
        /// The most a head update carries.
        max: usize,
        /// What was given.
        actual: usize,
    },
    /// An alarm policy whose `raise_k`/`window_n` do not satisfy `1 <= k <= n <= 32`.
    AlarmWindow {
        /// Windows above threshold needed to raise.
        k: u8,
        /// Length of the recent-window history.
        n: u8,
    },
}

impl fmt::Display for CoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoreError::LengthMismatch { expected, actual } => {
                write!(f, "expected {expected} values, got {actual}")
            }
            CoreError::ClassCount(n) => {
                write!(f, "a head needs 1 to {} classes, not {n}", crate::MAX_CLASSES)
            }
            CoreError::NotPositive => f.write_str("a scale, variance or rate is not finite and positive"),
            CoreError::NotFinite => f.write_str("a weight or bias is NaN or infinite"),
            CoreError::NotPowerOfTwo(n) => write!(f, "FFT length {n} is not a power of two"),
            CoreError::TooLarge { what, max, actual } => {
                write!(f, "{what} has {actual} values; a head update carries at most {max}")
            }
            CoreError::AlarmWindow { k, n } => {
                write!(f, "alarm policy needs 1 <= k <= n <= 32, got k={k}, n={n}")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for CoreError {}

/// Checks that `slice_len == expected`.
pub(crate) fn check_len(expected: usize, actual: usize) -> Result<(), CoreError> {
    if expected == actual {
        Ok(())
    } else {
        Err(CoreError::LengthMismatch { expected, actual })
    }
}
