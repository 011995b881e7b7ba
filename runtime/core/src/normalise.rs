//! Normalisation applied to every window before the backbone sees it.

use serde::{Deserialize, Serialize};

/// How a window is centred before scaling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Centre {
    /// Leave samples as they are.
    None,
    /// Subtract each channel's mean over the window (removes DC and sensor offset).
    WindowMean,
}

/// What a centred window is divided by.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Scaling {
    /// A fixed divisor, in sensor units (e.g. g).
    Fixed(f32),
    /// The window's own RMS after centring (never below `floor`): makes the model
    /// independent of sensor sensitivity and mounting.
    WindowRms {
        /// Smallest divisor used, so a silent channel is not amplified into noise.
        floor: f32,
    },
}

/// The normalisation a model was trained with: `x' = (x - centre) / scale`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Normalisation {
    /// Centring rule.
    pub centre: Centre,
    /// Scaling rule applied after centring.
    pub scaling: Scaling,
}

impl Normalisation {
    /// Normalises one channel of a window in place.
    pub fn apply(&self, channel: &mut [f32]) {
        let offset = match self.centre {
            Centre::None => 0.0,
            Centre::WindowMean => crate::dsp::mean(channel),
        };
        for v in channel.iter_mut() {
            *v -= offset;
        }
        let scale = match self.scaling {
            Scaling::Fixed(s) => s,
            Scaling::WindowRms { floor } => crate::dsp::rms(channel).max(floor),
        };
        let inv = if scale != 0.0 && scale.is_finite() { 1.0 / scale } else { 1.0 };
        for v in channel.iter_mut() {
            *v *= inv;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_mean_centring_then_scaling() {
        let n = Normalisation { centre: Centre::WindowMean, scaling: Scaling::Fixed(2.0) };
        let mut x = [1.0, 3.0, 5.0];
        n.apply(&mut x);
        assert_eq!(x, [-1.0, 0.0, 1.0]);
        let n = Normalisation { centre: Centre::None, scaling: Scaling::Fixed(0.5) };
        let mut x = [1.0, -2.0];
        n.apply(&mut x);
        assert_eq!(x, [2.0, -4.0]);
    }

    #[test]
    fn window_rms_scaling_gives_unit_rms_and_respects_the_floor() {
        let n = Normalisation { centre: Centre::WindowMean, scaling: Scaling::WindowRms { floor: 1e-3 } };
        let mut x = [5.0, 9.0, 5.0, 9.0];
        n.apply(&mut x);
        assert_eq!(x, [-1.0, 1.0, -1.0, 1.0]);
        let mut silent = [1e-5, -1e-5];
        n.apply(&mut silent);
        assert!((silent[0] - 1e-2).abs() < 1e-6);
    }
}
