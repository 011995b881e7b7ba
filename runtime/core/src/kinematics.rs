//! What a nameplate says about a machine, and what the signal says when it says nothing.
//!
//! A bearing fault's characteristic frequencies are fixed multiples (orders) of the shaft
//! speed set by the bearing's geometry, so the shaft speed and the bearing are what carry
//! a fault signature from one machine to another. [`Kinematics`] holds what is known of
//! both; either may be missing. [`estimate_shaft_hz`] finds the shaft speed from the
//! shaft's own lines (1x and its harmonics) in a power spectrum, and [`order_spectrum`]
//! re-indexes a spectrum in shaft orders, so machines turning at different speeds show
//! their faults at the same places.
//!
//! A designation such as `6205` names a bearing of the built-in [`CATALOGUE`] (its sources
//! are named in `docs/kinematics.md`); any other bearing is given as
//! `N,BALL,PITCH[,ANGLE]`: the number of rolling elements, the element and pitch
//! diameters in one unit, and the contact angle in degrees.

use crate::bearing::{BearingGeometry, FaultOrders};
use core::fmt;

/// Highest shaft speed accepted, in Hz (120,000 rpm).
pub const MAX_SHAFT_HZ: f32 = 2000.0;

/// A bearing of the built-in catalogue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CatalogueBearing {
    /// The designation a user types (case-insensitive).
    pub designation: &'static str,
    /// Where it is used and where the geometry comes from.
    pub note: &'static str,
    /// Its geometry (diameters in inches).
    pub geometry: BearingGeometry,
}

const fn ball(n_balls: u16, ball_diameter: f32, pitch_diameter: f32, contact_deg: f32) -> BearingGeometry {
    BearingGeometry {
        n_balls,
        ball_diameter,
        pitch_diameter,
        contact_angle: contact_deg * (core::f32::consts::PI / 180.0),
    }
}

/// Common bearings of public bearing data sets, by designation. Diameters in inches.
pub const CATALOGUE: &[CatalogueBearing] = &[
    CatalogueBearing {
        designation: "6205",
        note: "SKF 6205-2RS JEM deep groove ball bearing (CWRU drive end)",
        geometry: ball(9, 0.3126, 1.537, 0.0),
    },
    CatalogueBearing {
        designation: "6203",
        note: "SKF 6203-2RS JEM deep groove ball bearing (CWRU fan end)",
        geometry: ball(8, 0.2656, 1.122, 0.0),
    },
    CatalogueBearing {
        designation: "NICE",
        note: "NICE ball bearing of the MFPT fault data set's test rig",
        geometry: ball(8, 0.235, 1.245, 0.0),
    },
    CatalogueBearing {
        designation: "ZA-2115",
        note: "Rexnord ZA-2115 double-row bearing (IMS / NASA run-to-failure data)",
        geometry: ball(16, 0.331, 2.815, 15.17),
    },
    CatalogueBearing {
        designation: "UER204",
        note: "LDK UER204 ball bearing (XJTU-SY run-to-failure data), diameters in mm",
        geometry: ball(8, 7.92, 34.55, 0.0),
    },
];

/// Why a machine description was refused.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum KinematicsError {
    /// A shaft speed that is not finite, not positive or above [`MAX_SHAFT_HZ`].
    ShaftSpeed(f32),
    /// Fewer than 3 rolling elements.
    TooFewElements(u16),
    /// A diameter that is not finite and positive.
    Diameter,
    /// Rolling elements at least as large as the pitch circle.
    ElementsLargerThanPitch,
    /// `n` elements of this diameter do not fit side by side on the pitch circle.
    ElementsDoNotFit {
        /// Number of elements.
        n_balls: u16,
        /// Most elements of this diameter the pitch circle holds.
        room_for: u16,
    },
    /// A contact angle outside 0-60 degrees.
    ContactAngle(f32),
    /// A bearing neither in the catalogue nor written `N,BALL,PITCH[,ANGLE]`.
    UnknownDesignation,
}

impl fmt::Display for KinematicsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KinematicsError::ShaftSpeed(hz) => {
                write!(f, "shaft speed {hz} Hz is not a positive speed up to {MAX_SHAFT_HZ} Hz")
            }
            KinematicsError::TooFewElements(n) => write!(f, "a bearing has at least 3 rolling elements, not {n}"),
            KinematicsError::Diameter => f.write_str("element and pitch diameters must be positive numbers"),
            KinematicsError::ElementsLargerThanPitch => {
                f.write_str("the rolling elements are as large as the pitch circle; give ELEMENT diameter before PITCH")
            }
            KinematicsError::ElementsDoNotFit { n_balls, room_for } => write!(
                f,
                "{n_balls} rolling elements of this diameter do not fit on the pitch circle (room for {room_for})"
            ),
            KinematicsError::ContactAngle(deg) => {
                write!(f, "contact angle {deg} degrees is outside 0-60 degrees")
            }
            KinematicsError::UnknownDesignation => f.write_str(
                "not a known designation (6205, 6203, NICE, ZA-2115, UER204) nor N,ELEMENT,PITCH[,ANGLE_DEG]",
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for KinematicsError {}

/// Checks that a shaft speed is a speed.
pub fn check_shaft_hz(hz: f32) -> Result<f32, KinematicsError> {
    if hz.is_finite() && hz > 0.0 && hz <= MAX_SHAFT_HZ {
        Ok(hz)
    } else {
        Err(KinematicsError::ShaftSpeed(hz))
    }
}

impl BearingGeometry {
    /// Checks that the geometry describes a bearing that can exist: at least 3 elements,
    /// positive diameters, elements smaller than the pitch circle and fitting side by
    /// side on it, a contact angle of 0-60 degrees.
    pub fn validate(&self) -> Result<(), KinematicsError> {
        if self.n_balls < 3 {
            return Err(KinematicsError::TooFewElements(self.n_balls));
        }
        let positive = |v: f32| v.is_finite() && v > 0.0;
        if !positive(self.ball_diameter) || !positive(self.pitch_diameter) {
            return Err(KinematicsError::Diameter);
        }
        if self.ball_diameter >= self.pitch_diameter {
            return Err(KinematicsError::ElementsLargerThanPitch);
        }
        // Neighbouring centres on the pitch circle are a chord D sin(pi / n) apart.
        let room = |n: u16| self.pitch_diameter * libm::sinf(core::f32::consts::PI / f32::from(n));
        if room(self.n_balls) < self.ball_diameter {
            let room_for = (3..self.n_balls).rev().find(|&n| room(n) >= self.ball_diameter).unwrap_or(0);
            return Err(KinematicsError::ElementsDoNotFit { n_balls: self.n_balls, room_for });
        }
        let deg = self.contact_angle * (180.0 / core::f32::consts::PI);
        if !(deg.is_finite() && (0.0..=60.0).contains(&deg)) {
            return Err(KinematicsError::ContactAngle(deg));
        }
        Ok(())
    }

    /// A bearing by catalogue designation (case-insensitive, [`CATALOGUE`]) or as
    /// `N,ELEMENT,PITCH[,ANGLE_DEG]`, validated.
    pub fn parse(text: &str) -> Result<BearingGeometry, KinematicsError> {
        let text = text.trim();
        if let Some(known) = CATALOGUE.iter().find(|b| b.designation.eq_ignore_ascii_case(text)) {
            return Ok(known.geometry);
        }
        let mut fields = text.split(',').map(str::trim);
        let n_balls = fields.next().and_then(|f| f.parse::<u16>().ok());
        let mut number = || fields.next().and_then(|f| f.parse::<f32>().ok());
        let (Some(n_balls), Some(element), Some(pitch)) = (n_balls, number(), number()) else {
            return Err(KinematicsError::UnknownDesignation);
        };
        let angle = match fields.next() {
            None => 0.0,
            Some(f) => f.parse::<f32>().map_err(|_| KinematicsError::UnknownDesignation)?,
        };
        if fields.next().is_some() {
            return Err(KinematicsError::UnknownDesignation);
        }
        let geometry = ball(n_balls, element, pitch, angle);
        geometry.validate()?;
        Ok(geometry)
    }
}

/// What is known of a machine's kinematics: the shaft speed and the bearing under
/// observation, each optional.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Kinematics {
    /// Shaft speed in Hz.
    pub shaft_hz: Option<f32>,
    /// The bearing under observation.
    pub bearing: Option<BearingGeometry>,
}

impl Kinematics {
    /// Checks both parts.
    pub fn validate(&self) -> Result<(), KinematicsError> {
        if let Some(hz) = self.shaft_hz {
            check_shaft_hz(hz)?;
        }
        if let Some(b) = &self.bearing {
            b.validate()?;
        }
        Ok(())
    }

    /// Fills what `self` leaves unknown from `other`.
    pub fn or(self, other: Kinematics) -> Kinematics {
        Kinematics { shaft_hz: self.shaft_hz.or(other.shaft_hz), bearing: self.bearing.or(other.bearing) }
    }
}

/// Harmonics of the shaft speed the estimator looks for, at most.
const MAX_HARMONICS: usize = 12;
/// Multiplicative step between candidate speeds.
const CANDIDATE_STEP: f32 = 0.0005;
/// A harmonic's salience is counted up to this many nats over the local level.
const SALIENCE_CAP: f32 = 8.0;
/// What a harmonic missing from the spectrum costs, in nats.
const MISS_COST: f32 = 1.5;
/// Bins on each side of a bin over which its local level is taken.
const LOCAL_BINS: usize = 24;

/// A shaft speed read from the signal.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SpeedEstimate {
    /// Shaft speed in Hz.
    pub shaft_hz: f32,
    /// How sure the estimate is, 0 to 1: how far the chosen speed's harmonic comb
    /// stands above the best comb at a speed not related to it by a small ratio.
    pub confidence: f32,
}

/// Harmonic combs in one power spectrum: the log-spectrum and each bin's local level.
struct Combs<'a> {
    log_power: &'a [f32],
    local: &'a [f32],
    bin_hz: f32,
    top_hz: f32,
}

impl<'a> Combs<'a> {
    /// Fills `scratch` (`2 * power.len()` values) with the log-power and each bin's
    /// local level: the mean log-power of the bins around it (a sliding sum in f64).
    fn new(power: &[f32], bin_hz: f32, band_hz: f32, scratch: &'a mut [f32]) -> Self {
        let n = power.len();
        let (log_power, local) = scratch.split_at_mut(n);
        let floor = power.iter().copied().fold(0.0f32, f32::max) * 1e-12 + f32::MIN_POSITIVE;
        for (l, &p) in log_power.iter_mut().zip(power) {
            *l = libm::logf(p.max(floor));
        }
        let mut sum = 0.0f64;
        let (mut lo, mut hi) = (0usize, 0usize);
        for (i, slot) in local.iter_mut().enumerate() {
            while hi < (i + LOCAL_BINS + 1).min(n) {
                sum += f64::from(log_power[hi]);
                hi += 1;
            }
            while lo < i.saturating_sub(LOCAL_BINS) {
                sum -= f64::from(log_power[lo]);
                lo += 1;
            }
            *slot = (sum / (hi - lo) as f64) as f32;
        }
        let top_hz = band_hz.min(bin_hz * (n - 2) as f32);
        Combs { log_power, local, bin_hz, top_hz }
    }

    /// How far the spectrum at `hz` stands over its local level, in nats.
    fn salience(&self, hz: f32) -> f32 {
        let x = hz / self.bin_hz;
        let i = x as usize;
        let t = x - i as f32;
        let n = self.log_power.len();
        let log = (1.0 - t) * self.log_power[i.min(n - 1)] + t * self.log_power[(i + 1).min(n - 1)];
        log - self.local[i.min(n - 1)]
    }

    /// The comb score of fundamental `f`: each of its first harmonics `k` (up to 12 or
    /// the band) adds its salience, capped, less the cost of a miss, weighted 1/k (so a
    /// comb must have its first lines: half the speed misses its own first harmonic). Harmonics that fall on
    /// a harmonic of `masked` (another comb, already explained) count nothing.
    fn score(&self, f: f32, masked: Option<f32>) -> f32 {
        let harmonics = ((self.top_hz / f) as usize).clamp(1, MAX_HARMONICS);
        let tolerance = 1.5 * self.bin_hz;
        (1..=harmonics)
            .map(|k| {
                let hz = f * k as f32;
                let on_masked = masked.is_some_and(|m| {
                    let j = libm::roundf(hz / m).max(1.0);
                    (hz - j * m).abs() <= tolerance.max(0.003 * hz)
                });
                if on_masked {
                    0.0
                } else {
                    (self.salience(hz).clamp(0.0, SALIENCE_CAP) - MISS_COST) / k as f32
                }
            })
            .sum()
    }

    /// The best comb with a fundamental in `range`, refined by a parabola through its
    /// neighbouring candidates, with its score and confidence. None when no comb
    /// scores above zero.
    fn best(&self, (min_hz, max_hz): (f32, f32), masked: Option<f32>) -> Option<(SpeedEstimate, f32)> {
        let max_hz = max_hz.min(self.top_hz);
        if max_hz.is_nan() || min_hz.is_nan() || max_hz <= min_hz || min_hz <= 0.0 {
            return None;
        }
        let steps = (libm::logf(max_hz / min_hz) / libm::logf(1.0 + CANDIDATE_STEP)) as usize + 1;
        let candidate = |i: usize| min_hz * libm::powf(1.0 + CANDIDATE_STEP, i as f32);
        let (mut best_i, mut best) = (0, f32::MIN);
        for i in 0..steps {
            let s = self.score(candidate(i), masked);
            if s > best {
                (best_i, best) = (i, s);
            }
        }
        if best <= 0.0 {
            return None;
        }
        // The runner-up: the best candidate not within 3% of the winner or of a ratio
        // 2, 3, 1/2 or 1/3 of it.
        let winner = candidate(best_i);
        let related =
            |f: f32| [1.0f32, 2.0, 3.0, 0.5, 1.0 / 3.0].iter().any(|r| (f / (winner * r) - 1.0).abs() < 0.03);
        let runner_up = (0..steps)
            .map(candidate)
            .filter(|&f| !related(f))
            .map(|f| self.score(f, masked))
            .fold(0.0f32, f32::max);
        let shaft_hz = if best_i > 0 && best_i + 1 < steps {
            let (a, c) =
                (self.score(candidate(best_i - 1), masked), self.score(candidate(best_i + 1), masked));
            let denom = a - 2.0 * best + c;
            let offset = if denom < 0.0 { (0.5 * (a - c) / denom).clamp(-0.5, 0.5) } else { 0.0 };
            winner * libm::powf(1.0 + CANDIDATE_STEP, offset)
        } else {
            winner
        };
        // Twice the speed wins when the odd harmonics are weak; half of it is the shaft
        // when its own line stands out and its comb scores nearly as well.
        let half = 0.5 * shaft_hz;
        if half >= min_hz
            && self.salience(half) >= HALF_SALIENCE
            && self.score(half, masked) >= HALF_SHARE * best
        {
            return Some((SpeedEstimate { shaft_hz: half, confidence: 1.0 - runner_up / best }, best));
        }
        Some((SpeedEstimate { shaft_hz, confidence: 1.0 - runner_up / best }, best))
    }
}

/// Half the best comb's speed is taken when its first harmonic stands out this much
/// (nats)...
const HALF_SALIENCE: f32 = 2.0;
/// ...and its comb scores at least this share of the best.
const HALF_SHARE: f32 = 0.6;

/// Whether `a` and `b` are related by a whole ratio (1 to 4, either way) within 1.5%.
fn whole_ratio(a: f32, b: f32) -> bool {
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    let r = hi / lo;
    let k = libm::roundf(r);
    (1.0..=4.0).contains(&k) && (r / k - 1.0).abs() < 0.015
}

/// A fault comb in the envelope counts when it scores at least this much.
const FAULT_COMB_SCORE: f32 = 3.0;

/// Estimates the shaft speed from power spectra (`power[i]` at `i * bin_hz` Hz, as
/// [`crate::dsp::power_spectrum`] writes them; zero-padding twice over sharpens the
/// estimate) by harmonic summation: every candidate speed from `range.0` to `range.1`
/// (0.05% apart) sums the log-level of the spectrum at its first harmonics over their
/// local level, capped, less a cost for each harmonic that stands out nowhere, up to 12
/// harmonics or `band_hz`. The cost makes half the speed lose (it has twice the
/// harmonics to find), and twice the speed loses the odd harmonics.
///
/// A bearing fault's impacts make a comb of their own, at a fault frequency that is no
/// whole multiple of the shaft speed, and often a stronger one than the shaft's. With
/// `envelope` (the power spectrum of the envelope of the signal's high band, on the same
/// bins), the strongest envelope comb is taken for a fault comb. When the best comb of
/// `power` stands in a whole ratio to it, it is the fault's, and the shaft is the best
/// comb of `power` below the fault comb (a shaft turns slower than its bearing's race
/// and ball-spin frequencies) with the fault comb's harmonics masked, provided that
/// stands in no whole ratio to it.
///
/// With the bearing's fault `orders` as well, a fault comb tells the speed outright: it
/// lies at BPFO, BPFI or twice BSF of the shaft, so the shaft is the best comb of
/// `power` within 2% of the fault comb's frequency over one of those orders, when the
/// signal's best comb agrees (it is the fault comb, or a harmonic of that shaft).
///
/// `scratch` holds `4 * power.len()` values. None when no comb stands out.
pub fn estimate_shaft_hz(
    power: &[f32],
    envelope: Option<&[f32]>,
    bin_hz: f32,
    range: (f32, f32),
    band_hz: f32,
    orders: Option<FaultOrders>,
    scratch: &mut [f32],
) -> Option<SpeedEstimate> {
    let n = power.len();
    if n < 4
        || scratch.len() != 4 * n
        || bin_hz.is_nan()
        || bin_hz <= 0.0
        || envelope.is_some_and(|e| e.len() != n)
    {
        return None;
    }
    let (raw_scratch, env_scratch) = scratch.split_at_mut(2 * n);
    let raw = Combs::new(power, bin_hz, band_hz, raw_scratch);
    let plain = raw.best(range, None).map(|(e, _)| e);
    let Some(envelope) = envelope else { return plain };
    let env = Combs::new(envelope, bin_hz, band_hz, env_scratch);
    // Fault frequencies run from under the shaft speed (the cage) to many times it.
    let fault_range = (range.0, (range.1 * 10.0).min(band_hz));
    let fault = match env.best(fault_range, None) {
        Some((comb, score)) if score >= FAULT_COMB_SCORE => comb.shaft_hz,
        _ => return plain,
    };
    if let Some(orders) = orders {
        // The fault comb over each fault order: where the shaft must turn.
        let mut found: [Option<(SpeedEstimate, f32)>; 3] = [None; 3];
        for (slot, order) in found.iter_mut().zip([orders.bpfo, orders.bpfi, 2.0 * orders.bsf]) {
            let at = fault / order;
            let near = (range.0.max(at * 0.98), range.1.min(at * 1.02));
            *slot = raw.best(near, Some(fault));
        }
        let mut scored: [(f32, f32); 3] = [(0.0, f32::MIN); 3];
        for (s, f) in scored.iter_mut().zip(&found) {
            if let Some((e, score)) = f {
                *s = (e.shaft_hz, *score);
            }
        }
        scored.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
        // Taken when the signal's best comb does not contradict it: none, the fault's,
        // or a harmonic of it (the 2x line standing out above 1x).
        let agrees =
            plain.is_none_or(|p| whole_ratio(p.shaft_hz, fault) || whole_ratio(p.shaft_hz, scored[0].0));
        if scored[0].1 > 0.0 && agrees {
            let confidence = 1.0 - scored[1].1.max(0.0) / scored[0].1;
            return Some(SpeedEstimate { shaft_hz: scored[0].0, confidence });
        }
    }
    // The best comb of the signal is the shaft's unless it is the fault comb's.
    if plain.is_some_and(|p| !whole_ratio(p.shaft_hz, fault)) {
        return plain;
    }
    // A shaft turns slower than its bearing's outer- and inner-race and ball-spin combs.
    let below_fault = (range.0, range.1.min(fault / 1.1));
    match raw.best(below_fault, Some(fault)) {
        Some((masked, _)) if !whole_ratio(masked.shaft_hz, fault) => Some(masked),
        _ => plain,
    }
}

/// Re-indexes a spectrum in shaft orders: `orders[j]` is `spectrum` linearly
/// interpolated at order `first_order + j * order_step` of `shaft_hz`, that is at
/// `(first_order + j * order_step) * shaft_hz` Hz (bin `i` of `spectrum` is at
/// `i * bin_hz`). Orders beyond the spectrum read 0.
pub fn order_spectrum(
    spectrum: &[f32],
    bin_hz: f32,
    shaft_hz: f32,
    first_order: f32,
    order_step: f32,
    orders: &mut [f32],
) {
    for (j, out) in orders.iter_mut().enumerate() {
        let x = (first_order + j as f32 * order_step) * shaft_hz / bin_hz;
        let i = x as usize;
        *out = if x < 0.0 || i + 1 >= spectrum.len() {
            0.0
        } else {
            let t = x - i as f32;
            (1.0 - t) * spectrum[i] + t * spectrum[i + 1]
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dsp::{power_spectrum, Complex32};

    #[test]
    fn designations_and_geometries_parse_and_impossible_bearings_are_refused() {
        let nice = BearingGeometry::parse("nice").unwrap();
        assert_eq!((nice.n_balls, nice.ball_diameter, nice.pitch_diameter), (8, 0.235, 1.245));
        let o = BearingGeometry::parse("6205").unwrap().fault_orders();
        assert!((o.bpfo - 3.585).abs() < 0.01 && (o.bpfi - 5.415).abs() < 0.01, "{o:?}");
        // CWRU's fan-end 6203: BPFO 3.053, BPFI 4.947 orders (its published table).
        let o = BearingGeometry::parse("6203").unwrap().fault_orders();
        assert!((o.bpfo - 3.053).abs() < 0.01 && (o.bpfi - 4.947).abs() < 0.01, "{o:?}");
        // IMS's ZA-2115 at 2,000 rpm: BPFO 236.4 Hz.
        let o = BearingGeometry::parse("ZA-2115").unwrap().fault_orders();
        assert!((o.bpfo * 2000.0 / 60.0 - 236.4).abs() < 0.5, "{o:?}");
        let g = BearingGeometry::parse(" 9, 7.94, 39.04, 15 ").unwrap();
        assert!((g.contact_angle - 15f32.to_radians()).abs() < 1e-6);
        assert_eq!(BearingGeometry::parse("6205-2Z"), Err(KinematicsError::UnknownDesignation));
        assert_eq!(BearingGeometry::parse("9,7.94"), Err(KinematicsError::UnknownDesignation));
        assert_eq!(BearingGeometry::parse("9,7.94,39.04,0,1"), Err(KinematicsError::UnknownDesignation));
        assert_eq!(BearingGeometry::parse("2,1,10"), Err(KinematicsError::TooFewElements(2)));
        assert_eq!(BearingGeometry::parse("9,0,10"), Err(KinematicsError::Diameter));
        assert_eq!(BearingGeometry::parse("9,39.04,7.94"), Err(KinematicsError::ElementsLargerThanPitch));
        // 30 elements of half the pitch diameter: D sin(pi / n) >= d holds up to n = 6.
        assert_eq!(
            BearingGeometry::parse("30,0.5,1.0"),
            Err(KinematicsError::ElementsDoNotFit { n_balls: 30, room_for: 6 })
        );
        assert!(matches!(BearingGeometry::parse("9,7.94,39.04,75"), Err(KinematicsError::ContactAngle(_))));
        for b in CATALOGUE {
            assert_eq!(b.geometry.validate(), Ok(()), "{}", b.designation);
        }
    }

    #[test]
    fn shaft_speeds_are_checked() {
        assert_eq!(check_shaft_hz(29.95), Ok(29.95));
        for bad in [0.0, -3.0, f32::NAN, f32::INFINITY, 2500.0] {
            assert!(check_shaft_hz(bad).is_err(), "{bad}");
        }
        let k = Kinematics { shaft_hz: Some(-1.0), bearing: None };
        assert_eq!(k.validate(), Err(KinematicsError::ShaftSpeed(-1.0)));
        let given = Kinematics { shaft_hz: Some(25.0), bearing: None };
        let nameplate =
            Kinematics { shaft_hz: Some(30.0), bearing: Some(BearingGeometry::deep_groove_6205()) };
        assert_eq!(given.or(nameplate), Kinematics { shaft_hz: Some(25.0), ..nameplate });
    }

    #[test]
    fn the_order_spectrum_interpolates_the_spectrum_at_orders_of_the_shaft() {
        // Bin i of this spectrum is at 2 Hz and holds i * 10.
        let spectrum: [f32; 8] = core::array::from_fn(|i| i as f32 * 10.0);
        let mut orders = [0.0; 5];
        // Shaft 3 Hz, orders 0.5, 1.0, 1.5, 2.0, 2.5: 1.5, 3, 4.5, 6, 7.5 Hz, that is bins
        // 0.75, 1.5, 2.25, 3, 3.75 (by hand: 7.5, 15, 22.5, 30, 37.5).
        order_spectrum(&spectrum, 2.0, 3.0, 0.5, 0.5, &mut orders);
        assert_eq!(orders, [7.5, 15.0, 22.5, 30.0, 37.5]);
        // Order 4 is at 12 Hz, bin 6; orders 5 on (bin 7.5 and beyond) lie past the last
        // pair of bins: 0.
        order_spectrum(&spectrum, 2.0, 3.0, 4.0, 1.0, &mut orders);
        assert_eq!(orders, [60.0, 0.0, 0.0, 0.0, 0.0]);
    }

    /// Lines at 1x, 2x and 3x of `shaft_hz` over white noise, at 6 kHz, and its power
    /// spectrum zero-padded twice over.
    fn shaft_spectrum(shaft_hz: f32, amplitudes: [f32; 3], seconds: f32) -> (std::vec::Vec<f32>, f32) {
        let rate = 6000.0;
        let n = (seconds * rate) as usize;
        let mut state = 0x2545_f491_u32;
        let mut noise = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state as f32 / u32::MAX as f32 - 0.5) * 0.2
        };
        let x: std::vec::Vec<f32> = (0..n)
            .map(|i| {
                let t = i as f32 / rate;
                let w = 2.0 * core::f32::consts::PI * shaft_hz * t;
                amplitudes[0] * libm::sinf(w)
                    + amplitudes[1] * libm::sinf(2.0 * w + 1.0)
                    + amplitudes[2] * libm::sinf(3.0 * w + 2.0)
                    + noise()
            })
            .collect();
        let fft_len = (2 * n).next_power_of_two();
        let mut scratch = std::vec![Complex32::default(); fft_len];
        let mut power = std::vec![0.0; fft_len / 2];
        power_spectrum(&x, &mut scratch, &mut power).unwrap();
        (power, rate / fft_len as f32)
    }

    #[test]
    fn the_speed_of_a_shaft_is_read_from_its_lines_within_half_a_percent() {
        for (hz, amplitudes) in
            [(29.95, [0.2, 0.05, 0.025]), (3.3, [0.1, 0.1, 0.0]), (147.0, [0.02, 0.2, 0.1])]
        {
            let (power, bin_hz) = shaft_spectrum(hz, amplitudes, 4.0);
            let mut scratch = std::vec![0.0; 4 * power.len()];
            let e =
                estimate_shaft_hz(&power, None, bin_hz, (2.0, 200.0), 2400.0, None, &mut scratch).unwrap();
            assert!((e.shaft_hz - hz).abs() / hz < 5e-3, "{hz} Hz read as {e:?}");
            assert!(e.confidence > 0.1, "{e:?}");
        }
        // Noise alone shows no shaft.
        let (power, bin_hz) = shaft_spectrum(30.0, [0.0; 3], 4.0);
        let mut scratch = std::vec![0.0; 4 * power.len()];
        let e = estimate_shaft_hz(&power, None, bin_hz, (2.0, 200.0), 2400.0, None, &mut scratch);
        assert!(e.is_none_or(|e| e.confidence < 0.1), "{e:?}");
    }

    #[test]
    fn a_fault_comb_in_the_envelope_is_not_taken_for_the_shaft() {
        // The signal holds the shaft's 1x and 2x at 25 Hz and a stronger comb at an
        // outer-race frequency of 81.1 Hz (3.245 orders); the envelope holds that comb.
        let (shaft, bin_hz) = shaft_spectrum(25.0, [0.05, 0.05, 0.0], 2.0);
        let (fault, _) = shaft_spectrum(81.1, [0.3, 0.3, 0.3], 2.0);
        let power: std::vec::Vec<f32> = shaft.iter().zip(&fault).map(|(a, b)| a + b).collect();
        let mut scratch = std::vec![0.0; 4 * power.len()];
        let plain =
            estimate_shaft_hz(&power, None, bin_hz, (2.0, 200.0), 2400.0, None, &mut scratch).unwrap();
        assert!((plain.shaft_hz - 81.1).abs() < 0.5, "without the envelope the fault comb wins: {plain:?}");
        let e = estimate_shaft_hz(&power, Some(&fault), bin_hz, (2.0, 200.0), 2400.0, None, &mut scratch)
            .unwrap();
        assert!((e.shaft_hz - 25.0).abs() / 25.0 < 1e-2, "{e:?}");
    }
}
