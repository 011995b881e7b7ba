//! A physics-based rolling-element bearing vibration simulator.
//!
//! The model follows the textbook picture of a localised bearing defect (McFadden and
//! Smith; Randall and Antoni): every time a rolling element meets the defect, a short
//! impact excites the structural resonances between bearing and sensor, each ringing down
//! exponentially. Impacts repeat at the bearing's characteristic frequency (BPFO, BPFI or
//! twice BSF) with 1-2% random slip; an inner-race defect turns with the shaft and passes
//! through the load zone once per revolution, so its impacts are amplitude-modulated at
//! shaft speed; a ball defect travels with the cage and is modulated at the cage speed
//! (FTF), and its contact varies as the ball spins. Shaft harmonics stand for imbalance
//! (1x) and misalignment (2x, 3x); broadband noise stands for everything else. A fault can
//! start at time `onset_s` and grow, for run-to-failure scenarios.

mod scenario;

pub use scenario::SourceDomain;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::f64::consts::PI;
use vigil_core::bearing::BearingGeometry;

/// The kind of bearing fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// A healthy bearing.
    Normal,
    /// A spall on the outer race.
    OuterRace,
    /// A spall on the inner race.
    InnerRace,
    /// A defect on a rolling element.
    Ball,
}

impl FaultKind {
    /// All kinds, in the class order of the reference model.
    pub const ALL: [FaultKind; 4] =
        [FaultKind::Normal, FaultKind::OuterRace, FaultKind::InnerRace, FaultKind::Ball];

    /// The class name used in labels and model metadata.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Normal => "normal",
            FaultKind::OuterRace => "outer_race",
            FaultKind::InnerRace => "inner_race",
            FaultKind::Ball => "ball",
        }
    }

    /// Class index in the reference model.
    pub fn index(self) -> usize {
        Self::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }
}

/// One structural resonance between the bearing and the sensor.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Resonance {
    /// Natural frequency in Hz.
    pub freq_hz: f64,
    /// Damping ratio (0.01-0.1 is typical of machine structures).
    pub damping: f64,
    /// Peak response to a unit impact, in g.
    pub gain: f64,
}

/// A machine and its sensor.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MachineConfig {
    /// Sample rate in Hz.
    pub sample_rate_hz: f64,
    /// Number of accelerometer channels.
    pub channels: usize,
    /// Shaft speed in Hz (rev/s).
    pub shaft_hz: f64,
    /// Load as a fraction of rated load (scales impact strength and the load zone).
    pub load: f64,
    /// The bearing under observation.
    pub bearing: BearingGeometry,
    /// Structural resonances excited by impacts.
    pub resonances: Vec<Resonance>,
    /// Sensor sensitivity multiplier (1 = nominal).
    pub sensor_gain: f64,
    /// RMS of broadband noise, in g.
    pub noise_rms: f64,
    /// Amplitude of the 1x shaft component (imbalance), in g.
    pub imbalance: f64,
    /// Amplitude of the 2x and 3x shaft components (misalignment), in g.
    pub misalignment: f64,
    /// Standard deviation of the random slip between impacts, as a fraction of the period.
    pub slip: f64,
}

impl MachineConfig {
    /// The phases of the 2x and 3x shaft components relative to 1x, in radians. Imbalance
    /// and misalignment are the machine's geometry, so these belong to the machine, not
    /// to a recording: two recordings of one machine share them, two machines differ.
    /// The simulator derives them from the machine's parameters (a hash of their bits),
    /// which spreads them evenly over machines drawn from a source domain.
    pub fn harmonic_phases(&self) -> [f64; 2] {
        // FNV-1a over the parameters' bits.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |v: f64| {
            for b in v.to_bits().to_le_bytes() {
                hash ^= u64::from(b);
                hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        for v in
            [self.shaft_hz, self.load, self.sensor_gain, self.noise_rms, self.imbalance, self.misalignment]
        {
            eat(v);
        }
        for r in &self.resonances {
            eat(r.freq_hz);
        }
        let unit = |bits: u64| (bits >> 11) as f64 / (1u64 << 53) as f64;
        let second = unit(hash);
        let third = unit(hash.rotate_left(29).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        [second * 2.0 * PI, third * 2.0 * PI]
    }
}

/// A fault and how it develops.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FaultConfig {
    /// Which fault.
    pub kind: FaultKind,
    /// Severity at onset, 0 (none) to 1 (severe).
    pub severity: f64,
    /// Time at which the fault appears, in seconds.
    pub onset_s: f64,
    /// Severity added per second after onset (run to failure), capped at 1.
    pub growth_per_s: f64,
}

impl FaultConfig {
    /// A healthy machine.
    pub fn healthy() -> Self {
        FaultConfig { kind: FaultKind::Normal, severity: 0.0, onset_s: 0.0, growth_per_s: 0.0 }
    }

    /// Severity at time `t`.
    pub fn severity_at(&self, t: f64) -> f64 {
        if self.kind == FaultKind::Normal || t < self.onset_s {
            0.0
        } else {
            (self.severity + self.growth_per_s * (t - self.onset_s)).min(1.0)
        }
    }
}

/// Impact strength in g per unit severity at full load, before resonance gains.
const IMPACT_SCALE: f64 = 3.0;
/// Impulse responses are cut once they have decayed by this many time constants.
const RINGDOWN_TAU: f64 = 8.0;

#[derive(Debug, Clone, Copy)]
struct Impact {
    time_s: f64,
    amplitude: f64,
}

/// Generates the signal sample by sample; deterministic for a given seed.
#[derive(Debug)]
pub struct Simulator {
    machine: MachineConfig,
    fault: FaultConfig,
    rng: ChaCha8Rng,
    sample: u64,
    next_impact_s: f64,
    active: Vec<Impact>,
    ringdown_s: f64,
    shaft_phase: [f64; 3],
    cage_phase: f64,
    channel_mix: Vec<f64>,
    spare_gaussian: Option<f64>,
    ball_contact: f64,
    ball_strikes: u64,
}

impl Simulator {
    /// A simulator for `machine` with `fault`, seeded with `seed`.
    pub fn new(machine: MachineConfig, fault: FaultConfig, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let ringdown_s = machine
            .resonances
            .iter()
            .map(|r| RINGDOWN_TAU / (r.damping * 2.0 * PI * r.freq_hz))
            .fold(0.0, f64::max);
        // A recording starts anywhere in the shaft's turn, but the 2x and 3x components
        // keep their phase relative to 1x from one recording of a machine to the next
        // (`MachineConfig::harmonic_phases`). The cage's phase (a ball defect's load
        // zone) is the recording's own. Three draws, as before, so the noise that
        // follows is the same sequence.
        let turn = rng.gen::<f64>() * 2.0 * PI;
        let cage = rng.gen::<f64>() * 2.0 * PI;
        let _unused: f64 = rng.gen();
        let [second, third] = machine.harmonic_phases();
        let shaft_phase = [turn, 2.0 * turn + second, 3.0 * turn + third];
        // Further channels see the same sources through a different path.
        let channel_mix =
            (0..machine.channels).map(|c| if c == 0 { 1.0 } else { rng.gen_range(0.4..0.9) }).collect();
        let first = fault.onset_s.max(0.0) + rng.gen::<f64>() * 0.01;
        Simulator {
            machine,
            fault,
            rng,
            sample: 0,
            next_impact_s: first,
            active: Vec::new(),
            ringdown_s,
            shaft_phase,
            cage_phase: cage,
            channel_mix,
            spare_gaussian: None,
            ball_contact: 1.0,
            ball_strikes: 0,
        }
    }

    /// A simulator of the fault's impacts alone: `machine` without noise and without
    /// shaft components. With the same `fault` and `seed` it draws the same random numbers
    /// as [`Simulator::new`], so it gives the impact part of that simulator's signal,
    /// sample for sample (scaled by the same sensor gain).
    pub fn impacts_only(machine: MachineConfig, fault: FaultConfig, seed: u64) -> Self {
        let quiet = MachineConfig { noise_rms: 0.0, imbalance: 0.0, misalignment: 0.0, ..machine };
        Simulator::new(quiet, fault, seed)
    }

    /// The machine being simulated.
    pub fn machine(&self) -> &MachineConfig {
        &self.machine
    }

    /// Time of the next sample, in seconds.
    pub fn time_s(&self) -> f64 {
        self.sample as f64 / self.machine.sample_rate_hz
    }

    /// Fills `out` with interleaved frames (`out.len()` must be a multiple of the channel
    /// count).
    pub fn fill(&mut self, out: &mut [f32]) {
        let channels = self.machine.channels;
        for frame in out.chunks_exact_mut(channels) {
            let t = self.time_s();
            self.schedule_impacts(t);
            let mech = self.mechanical(t);
            let shaft = self.shaft_harmonics(t);
            for (c, slot) in frame.iter_mut().enumerate() {
                let noise = self.gaussian() * self.machine.noise_rms;
                let v = self.machine.sensor_gain * (self.channel_mix[c] * (mech + shaft) + noise);
                *slot = v as f32;
            }
            self.sample += 1;
        }
    }

    /// Generates `seconds` of signal as interleaved frames.
    pub fn generate(&mut self, seconds: f64) -> Vec<f32> {
        let frames = (seconds * self.machine.sample_rate_hz).round() as usize;
        let mut out = vec![0.0; frames * self.machine.channels];
        self.fill(&mut out);
        out
    }

    fn impact_period_s(&self) -> Option<f64> {
        let orders = self.machine.bearing.fault_orders();
        let order = match self.fault.kind {
            FaultKind::Normal => return None,
            FaultKind::OuterRace => orders.bpfo,
            FaultKind::InnerRace => orders.bpfi,
            // A ball defect strikes both races once per spin revolution.
            FaultKind::Ball => 2.0 * orders.bsf,
        };
        Some(1.0 / (f64::from(order) * self.machine.shaft_hz))
    }

    fn schedule_impacts(&mut self, t: f64) {
        let Some(period) = self.impact_period_s() else {
            return;
        };
        while self.next_impact_s <= t + 1.0 / self.machine.sample_rate_hz {
            let at = self.next_impact_s;
            let severity = self.fault.severity_at(at);
            if severity > 0.0 {
                let amplitude =
                    IMPACT_SCALE * severity * self.modulation(at) * (0.4 + 0.6 * self.machine.load);
                self.active.push(Impact { time_s: at, amplitude });
            }
            let jitter = (1.0 + self.machine.slip * self.gaussian()).max(0.5);
            self.next_impact_s += period * jitter;
        }
        let horizon = t - self.ringdown_s;
        self.active.retain(|i| i.time_s >= horizon);
    }

    /// Amplitude modulation of an impact at time `at` by the load zone.
    fn modulation(&mut self, at: f64) -> f64 {
        let orders = self.machine.bearing.fault_orders();
        match self.fault.kind {
            FaultKind::Normal => 0.0,
            // Stationary defect, assumed at the centre of the load zone.
            FaultKind::OuterRace => 1.0,
            // The defect turns with the shaft through the load zone; the longer path
            // through the rolling elements attenuates it.
            FaultKind::InnerRace => {
                let phase = 2.0 * PI * self.machine.shaft_hz * at + self.shaft_phase[0];
                0.7 * load_zone(phase)
            }
            // The ball travels with the cage; its defect only sometimes meets a race
            // squarely as the ball spins.
            FaultKind::Ball => {
                let phase = 2.0 * PI * f64::from(orders.ftf) * self.machine.shaft_hz * at + self.cage_phase;
                self.ball_contact = 0.7 * self.ball_contact + 0.3 * self.rng.gen_range(0.2..1.3);
                // Successive impacts alternate between the outer race and the (farther)
                // inner race.
                self.ball_strikes += 1;
                let race = if self.ball_strikes.is_multiple_of(2) { 1.0 } else { 0.5 };
                load_zone(phase) * self.ball_contact * race
            }
        }
    }

    fn mechanical(&self, t: f64) -> f64 {
        let mut v = 0.0;
        for impact in &self.active {
            let tau = t - impact.time_s;
            if tau < 0.0 {
                continue;
            }
            for r in &self.machine.resonances {
                let w = 2.0 * PI * r.freq_hz;
                let wd = w * (1.0 - r.damping * r.damping).sqrt();
                v += impact.amplitude * r.gain * (-r.damping * w * tau).exp() * (wd * tau).sin();
            }
        }
        v
    }

    fn shaft_harmonics(&self, t: f64) -> f64 {
        let w = 2.0 * PI * self.machine.shaft_hz * t;
        self.machine.imbalance * (w + self.shaft_phase[0]).sin()
            + self.machine.misalignment
                * ((2.0 * w + self.shaft_phase[1]).sin() + 0.5 * (3.0 * w + self.shaft_phase[2]).sin())
    }

    /// A standard normal sample (Box-Muller, using both outputs).
    fn gaussian(&mut self) -> f64 {
        if let Some(g) = self.spare_gaussian.take() {
            return g;
        }
        let u1: f64 = self.rng.gen_range(f64::EPSILON..1.0);
        let u2: f64 = self.rng.gen();
        let r = (-2.0 * u1.ln()).sqrt();
        self.spare_gaussian = Some(r * (2.0 * PI * u2).sin());
        r * (2.0 * PI * u2).cos()
    }
}

/// Load distribution around the bearing: full at the bottom, fading to 0.35 at the top
/// (radial clearance small enough that every element stays in contact).
fn load_zone(phase: f64) -> f64 {
    let c = 0.5 * (1.0 + phase.cos());
    0.35 + 0.65 * c * c
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_core::dsp::{kurtosis, power_spectrum, Complex32};

    fn machine() -> MachineConfig {
        MachineConfig::reference(16_000.0, 1)
    }

    #[test]
    fn same_seed_same_signal() {
        let fault =
            FaultConfig { kind: FaultKind::OuterRace, severity: 0.5, onset_s: 0.0, growth_per_s: 0.0 };
        let a = Simulator::new(machine(), fault, 7).generate(0.5);
        let b = Simulator::new(machine(), fault, 7).generate(0.5);
        let c = Simulator::new(machine(), fault, 8).generate(0.5);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    /// The impacts-only twin draws the same random numbers: with the shaft components off,
    /// the full signal less the twin's is the sensor's noise alone. Had the twin drawn
    /// other impacts (other slips, other ball contacts), the difference would carry both
    /// sets, and with impacts of at least half the noise's RMS its RMS would be 20% above
    /// the noise's.
    #[test]
    fn the_impacts_only_twin_is_the_signal_less_noise_and_shaft() {
        let m =
            MachineConfig { imbalance: 0.0, misalignment: 0.0, sensor_gain: 1.5, channels: 2, ..machine() };
        for kind in [FaultKind::OuterRace, FaultKind::InnerRace, FaultKind::Ball] {
            let fault = FaultConfig { kind, severity: 0.7, onset_s: 0.0, growth_per_s: 0.0 };
            let full = Simulator::new(m.clone(), fault, 5).generate(0.5);
            let impacts = Simulator::impacts_only(m.clone(), fault, 5).generate(0.5);
            let rms =
                |x: &[f32]| (x.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / x.len() as f64).sqrt();
            let noise: Vec<f32> = full.iter().zip(&impacts).map(|(a, b)| a - b).collect();
            let expected = m.sensor_gain * m.noise_rms;
            assert!(
                (rms(&noise) / expected - 1.0).abs() < 0.02,
                "{kind:?}: {} against {expected}",
                rms(&noise)
            );
            assert!(rms(&impacts) > 0.5 * expected, "{kind:?}: the twin has impacts ({})", rms(&impacts));
        }
        let quiet = Simulator::impacts_only(m, FaultConfig::healthy(), 5).generate(0.1);
        assert!(quiet.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn faults_are_impulsive_and_healthy_is_not() {
        let healthy = Simulator::new(machine(), FaultConfig::healthy(), 1).generate(1.0);
        let fault =
            FaultConfig { kind: FaultKind::OuterRace, severity: 0.6, onset_s: 0.0, growth_per_s: 0.0 };
        let faulty = Simulator::new(machine(), fault, 1).generate(1.0);
        assert!(kurtosis(&healthy) < 3.5, "healthy kurtosis {}", kurtosis(&healthy));
        assert!(kurtosis(&faulty) > 5.0, "faulty kurtosis {}", kurtosis(&faulty));
    }

    /// The envelope spectrum of an outer-race fault peaks at BPFO: the simulator's physics
    /// is what envelope analysis expects.
    #[test]
    fn outer_race_envelope_peaks_at_bpfo() {
        let m = machine();
        let fault =
            FaultConfig { kind: FaultKind::OuterRace, severity: 0.8, onset_s: 0.0, growth_per_s: 0.0 };
        let x = Simulator::new(m.clone(), fault, 3).generate(2.5);
        // Envelope by squaring (the resonances are far above the fault rate), then spectrum.
        let n = 32_768;
        let env: Vec<f32> = x[..n].iter().map(|v| v * v).collect();
        let mut scratch = vec![Complex32::default(); n];
        let mut power = vec![0.0; n / 2];
        power_spectrum(&env, &mut scratch, &mut power).unwrap();
        let hz_per_bin = m.sample_rate_hz / n as f64;
        let lo = (20.0 / hz_per_bin) as usize;
        let hi = (500.0 / hz_per_bin) as usize;
        let peak = (lo..hi).max_by(|&a, &b| power[a].total_cmp(&power[b])).unwrap();
        let bpfo = f64::from(m.bearing.fault_orders().bpfo) * m.shaft_hz;
        assert!(
            (peak as f64 * hz_per_bin - bpfo).abs() < 2.0 * hz_per_bin + 0.02 * bpfo,
            "peak {} Hz, BPFO {bpfo} Hz",
            peak as f64 * hz_per_bin
        );
    }

    #[test]
    fn run_to_failure_starts_at_onset_and_grows() {
        let f = FaultConfig { kind: FaultKind::InnerRace, severity: 0.2, onset_s: 10.0, growth_per_s: 0.01 };
        assert_eq!(f.severity_at(9.9), 0.0);
        assert!((f.severity_at(20.0) - 0.3).abs() < 1e-12);
        assert_eq!(f.severity_at(1000.0), 1.0);
    }
}
