//! Named machines and the random source domain the reference model is trained on.

use super::{FaultConfig, FaultKind, MachineConfig, Resonance};
use rand::Rng;
use std::f64::consts::PI;
use vigil_core::bearing::BearingGeometry;

impl MachineConfig {
    /// The reference machine: a motor-driven pump at 1,797 rpm on a 6205 bearing, with two
    /// resonances. It is the demo's machine and the default of `vigil simulate`.
    pub fn reference(sample_rate_hz: f64, channels: usize) -> Self {
        MachineConfig {
            sample_rate_hz,
            channels,
            shaft_hz: 29.95,
            load: 0.7,
            bearing: BearingGeometry::deep_groove_6205(),
            resonances: vec![
                Resonance { freq_hz: 3100.0, damping: 0.04, gain: 1.0 },
                Resonance { freq_hz: 5200.0, damping: 0.05, gain: 0.5 },
            ],
            sensor_gain: 1.0,
            noise_rms: 0.08,
            imbalance: 0.2,
            misalignment: 0.05,
            slip: 0.015,
        }
    }
}

/// The ranges the source domain spans: every pretraining recording draws a machine and a
/// fault from these.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceDomain {
    /// Shaft speed range in Hz.
    pub shaft_hz: (f64, f64),
    /// Load range.
    pub load: (f64, f64),
    /// Number of rolling elements.
    pub n_balls: (u16, u16),
    /// Ball over pitch diameter.
    pub ball_ratio: (f64, f64),
    /// Resonance frequency range in Hz.
    pub resonance_hz: (f64, f64),
    /// Damping ratio range.
    pub damping: (f64, f64),
    /// Sensor gain range.
    pub sensor_gain: (f64, f64),
    /// Noise RMS range in g.
    pub noise_rms: (f64, f64),
    /// Imbalance amplitude range in g.
    pub imbalance: (f64, f64),
    /// Misalignment amplitude range in g.
    pub misalignment: (f64, f64),
    /// Fault severity range.
    pub severity: (f64, f64),
    /// Keep drawn machines realisable: shrink rolling elements that would not fit side
    /// by side on the pitch circle, move resonances above 45% of the sample rate below
    /// it. (The reference and shifted domains predate this and keep their machines as
    /// they were.)
    pub realisable: bool,
}

impl Default for SourceDomain {
    fn default() -> Self {
        SourceDomain {
            shaft_hz: (15.0, 50.0),
            load: (0.2, 1.0),
            n_balls: (7, 13),
            ball_ratio: (0.15, 0.3),
            resonance_hz: (1500.0, 6500.0),
            damping: (0.02, 0.08),
            sensor_gain: (0.5, 2.0),
            noise_rms: (0.01, 0.08),
            imbalance: (0.02, 0.5),
            misalignment: (0.0, 0.3),
            severity: (0.4, 1.0),
            realisable: false,
        }
    }
}

fn uniform(rng: &mut impl Rng, (lo, hi): (f64, f64)) -> f64 {
    if hi > lo {
        rng.gen_range(lo..hi)
    } else {
        lo
    }
}

impl SourceDomain {
    /// Machines outside the pretraining range: faster shafts (52-60 Hz), resonances
    /// above it (6.8-7.6 kHz), hotter sensors (gain 2.5-4) and noisier sites
    /// (0.08-0.15 g). The adaptation experiment draws its fleet from here.
    pub fn shifted() -> Self {
        SourceDomain {
            shaft_hz: (52.0, 60.0),
            resonance_hz: (6800.0, 7600.0),
            sensor_gain: (2.5, 4.0),
            noise_rms: (0.08, 0.15),
            ..SourceDomain::default()
        }
    }

    /// The whole range of kinematics a model meant for any machine must cover: shaft
    /// speeds of 2-200 Hz (drawn evenly on a log scale), 3-20 rolling elements,
    /// resonances anywhere up to 45% of the sample rate, sensors of a tenth to ten
    /// times the nominal gain, quiet to noisy sites, imbalance and misalignment from
    /// none to strong.
    pub fn wide() -> Self {
        SourceDomain {
            shaft_hz: (2.0, 200.0),
            load: (0.1, 1.0),
            n_balls: (6, 20),
            ball_ratio: (0.1, 0.32),
            resonance_hz: (500.0, 45_000.0),
            damping: (0.01, 0.1),
            sensor_gain: (0.1, 10.0),
            noise_rms: (0.005, 0.2),
            imbalance: (0.005, 1.0),
            misalignment: (0.0, 0.5),
            severity: (0.2, 1.0),
            realisable: true,
        }
    }

    /// Draws a machine. Shaft speeds over a range wider than tenfold are drawn evenly on
    /// a log scale.
    pub fn machine(&self, rng: &mut impl Rng, sample_rate_hz: f64, channels: usize) -> MachineConfig {
        let pitch = 40.0;
        let n_modes = rng.gen_range(1..=3);
        let resonances = (0..n_modes)
            .map(|i| Resonance {
                freq_hz: match uniform(rng, self.resonance_hz) {
                    hz if self.realisable => hz.min(0.45 * sample_rate_hz),
                    hz => hz,
                },
                damping: uniform(rng, self.damping),
                gain: if i == 0 { 1.0 } else { rng.gen_range(0.2..0.8) },
            })
            .collect();
        // Drawn in the order the reference domain always drew them, so its machines stay
        // what they were.
        let shaft_hz = if self.shaft_hz.1 > 10.0 * self.shaft_hz.0 {
            uniform(rng, (self.shaft_hz.0.ln(), self.shaft_hz.1.ln())).exp()
        } else {
            uniform(rng, self.shaft_hz)
        };
        let load = uniform(rng, self.load);
        let n_balls = rng.gen_range(self.n_balls.0..=self.n_balls.1);
        let mut ball_ratio = uniform(rng, self.ball_ratio);
        if self.realisable {
            ball_ratio = ball_ratio.min(0.9 * (PI / f64::from(n_balls)).sin());
        }
        MachineConfig {
            sample_rate_hz,
            channels,
            shaft_hz,
            load,
            bearing: BearingGeometry {
                n_balls,
                ball_diameter: (pitch * ball_ratio) as f32,
                pitch_diameter: pitch as f32,
                contact_angle: rng.gen_range(0.0..0.3),
            },
            resonances,
            sensor_gain: uniform(rng, self.sensor_gain),
            noise_rms: uniform(rng, self.noise_rms),
            imbalance: uniform(rng, self.imbalance),
            misalignment: uniform(rng, self.misalignment),
            slip: rng.gen_range(0.01..0.02),
        }
    }

    /// Draws a fault of `kind` present from the start.
    pub fn fault(&self, rng: &mut impl Rng, kind: FaultKind) -> FaultConfig {
        if kind == FaultKind::Normal {
            return FaultConfig::healthy();
        }
        FaultConfig { kind, severity: uniform(rng, self.severity), onset_s: 0.0, growth_per_s: 0.0 }
    }
}
