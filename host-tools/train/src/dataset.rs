//! Labelled windows simulated from the source domain, split by recording.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use vigil_core::normalise::Normalisation;
use vigil_sim::{FaultKind, Simulator, SourceDomain};

/// A set of equally shaped windows with labels.
#[derive(Debug, Clone, Default)]
pub struct WindowSet {
    /// `len() * channels * window` samples, each window channel-major.
    pub samples: Vec<f32>,
    /// Class index of each window.
    pub labels: Vec<u32>,
    /// Recording each window came from.
    pub recordings: Vec<u32>,
    /// Channels per window.
    pub channels: usize,
    /// Samples per channel.
    pub window: usize,
}

impl WindowSet {
    /// Number of windows.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Window `i`.
    pub fn window(&self, i: usize) -> &[f32] {
        let n = self.channels * self.window;
        &self.samples[i * n..(i + 1) * n]
    }

    /// Applies `norm` to every channel of every window.
    pub fn normalise(&mut self, norm: &Normalisation) {
        for channel in self.samples.chunks_exact_mut(self.window) {
            norm.apply(channel);
        }
    }
}

/// How many recordings and windows to simulate.
#[derive(Debug, Clone, Copy)]
pub struct SimulatedSplit {
    /// Recordings (each a fresh machine and fault drawn from the domain).
    pub recordings: usize,
    /// Windows cut from each recording.
    pub windows_per_recording: usize,
    /// Seed of the split; different seeds give disjoint machines.
    pub seed: u64,
}

/// What the machine of each simulated window was doing.
#[derive(Debug, Clone, Default)]
pub struct WindowConditions {
    /// Shaft speed in Hz.
    pub shaft_hz: Vec<f32>,
    /// The power of the fault's impacts over the power of the sensor noise on the first
    /// channel, in dB (negative infinity for a healthy window): how visible the fault is.
    /// Empty unless asked for.
    pub snr_db: Vec<f32>,
}

/// Simulates labelled windows; classes are balanced across recordings. Also gives each
/// window's shaft speed and, with `snr`, its impact-to-noise ratio. `progress` is called
/// once for each recording simulated.
pub fn simulate_windows(
    domain: &SourceDomain,
    split: SimulatedSplit,
    sample_rate_hz: f64,
    channels: usize,
    window: usize,
    progress: &mut dyn FnMut(),
    snr: bool,
) -> (WindowSet, WindowConditions) {
    let mut rng = ChaCha8Rng::seed_from_u64(split.seed);
    let mut set = WindowSet { channels, window, ..Default::default() };
    let mut conditions = WindowConditions::default();
    let mut frame = vec![0.0f32; window * channels];
    let mut impacts = vec![0.0f32; window * channels];
    for r in 0..split.recordings {
        let kind = FaultKind::ALL[r % FaultKind::ALL.len()];
        let machine = domain.machine(&mut rng, sample_rate_hz, channels);
        let fault = domain.fault(&mut rng, kind);
        let seed = split.seed.wrapping_mul(1_000_003).wrapping_add(r as u64);
        let noise_power = (machine.sensor_gain * machine.noise_rms).powi(2);
        let shaft_hz = machine.shaft_hz as f32;
        let mut twin = snr.then(|| Simulator::impacts_only(machine.clone(), fault, seed));
        let mut sim = Simulator::new(machine, fault, seed);
        for _ in 0..split.windows_per_recording {
            sim.fill(&mut frame);
            // Interleaved frames to channel-major.
            for c in 0..channels {
                set.samples.extend(frame.iter().skip(c).step_by(channels));
            }
            set.labels.push(kind.index() as u32);
            set.recordings.push(r as u32);
            conditions.shaft_hz.push(shaft_hz);
            if let Some(twin) = twin.as_mut() {
                twin.fill(&mut impacts);
                let power = impacts.iter().step_by(channels).map(|&v| f64::from(v).powi(2)).sum::<f64>()
                    / window as f64;
                conditions.snr_db.push((10.0 * (power / noise_power).log10()) as f32);
            }
        }
        progress();
    }
    (set, conditions)
}
