//! Rolling-element bearing geometry and its characteristic fault frequencies.

use serde::{Deserialize, Serialize};

/// The geometry of a rolling-element bearing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BearingGeometry {
    /// Number of rolling elements.
    pub n_balls: u16,
    /// Rolling element diameter (any length unit, the same as `pitch_diameter`).
    pub ball_diameter: f32,
    /// Pitch diameter.
    pub pitch_diameter: f32,
    /// Contact angle in radians.
    pub contact_angle: f32,
}

/// Characteristic frequencies as multiples of the shaft speed (orders).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FaultOrders {
    /// Ball pass frequency, outer race.
    pub bpfo: f32,
    /// Ball pass frequency, inner race.
    pub bpfi: f32,
    /// Ball (rolling element) spin frequency.
    pub bsf: f32,
    /// Fundamental train (cage) frequency.
    pub ftf: f32,
}

impl FaultOrders {
    /// The same frequencies in Hz at a shaft speed of `shaft_hz`.
    pub fn at_shaft_hz(&self, shaft_hz: f32) -> FaultOrders {
        FaultOrders {
            bpfo: self.bpfo * shaft_hz,
            bpfi: self.bpfi * shaft_hz,
            bsf: self.bsf * shaft_hz,
            ftf: self.ftf * shaft_hz,
        }
    }
}

impl BearingGeometry {
    /// A 6205-type deep groove ball bearing (9 balls, 7.94 mm balls on a 39 mm pitch).
    pub const fn deep_groove_6205() -> Self {
        BearingGeometry { n_balls: 9, ball_diameter: 7.94, pitch_diameter: 39.04, contact_angle: 0.0 }
    }

    /// The textbook kinematic fault orders (contact angles up to 2 pi).
    pub fn fault_orders(&self) -> FaultOrders {
        let r = self.ball_diameter / self.pitch_diameter * crate::dsp::sin_cos(self.contact_angle).1;
        let n = f32::from(self.n_balls);
        FaultOrders {
            bpfo: n / 2.0 * (1.0 - r),
            bpfi: n / 2.0 * (1.0 + r),
            bsf: self.pitch_diameter / (2.0 * self.ball_diameter) * (1.0 - r * r),
            ftf: 0.5 * (1.0 - r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_of_a_6205_match_published_values() {
        // Published values for the 6205-2RS JEM SKF: BPFO 3.585, BPFI 5.415, BSF 2.357,
        // FTF 0.398 (orders of shaft speed).
        let o = BearingGeometry::deep_groove_6205().fault_orders();
        assert!((o.bpfo - 3.585).abs() < 0.01, "{o:?}");
        assert!((o.bpfi - 5.415).abs() < 0.01, "{o:?}");
        assert!((o.bsf - 2.357).abs() < 0.02, "{o:?}");
        assert!((o.ftf - 0.398).abs() < 0.005, "{o:?}");
        // Identity: BPFO + BPFI = number of balls.
        assert!((o.bpfo + o.bpfi - 9.0).abs() < 1e-4);
        let hz = o.at_shaft_hz(30.0);
        assert!((hz.bpfo - 30.0 * o.bpfo).abs() < 1e-4);
    }
}
