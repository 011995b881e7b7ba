//! Vigil's core, shared by the gateway runtime, the firmware and the host tools.
//!
//! Everything that must behave identically on a factory gateway and on a microcontroller
//! lives here exactly once: the normalisation and resampling maths applied to sensor
//! windows, the DSP features, the classification head with its normal-state prototype,
//! the alarm policy, the report types and the rolling-element bearing geometry, and the
//! device side of the serial protocol: the wire format ([`wire`]), signed head updates in
//! A/B slots ([`update`]) and the agent that answers a host ([`agent`]).
//!
//! The crate is `no_std` and never allocates. Buffers are borrowed from the caller and
//! fixed capacities are named constants ([`MAX_CLASSES`], [`MAX_TOP_BANDS`]).
//!
//! ```
//! use vigil_core::alarm::{AlarmPolicy, AlarmState, AlarmTransition};
//! use vigil_core::head::{HeadRef, PrototypeRef};
//!
//! // A two-class head over a two-dimensional embedding.
//! let head = HeadRef::new(&[1.0, 0.0, 0.0, 1.0], &[0.0, 0.0], 2, 2).unwrap();
//! let mut logits = [0.0; 2];
//! head.logits(&[0.2, 3.0], &mut logits).unwrap();
//! assert!(logits[1] > logits[0]);
//!
//! // Anomaly score against the normal-state prototype, then the alarm policy.
//! let proto = PrototypeRef::new(&[0.0, 0.0], &[1.0, 1.0]).unwrap();
//! let policy = AlarmPolicy { threshold: 2.0, raise_k: 2, window_n: 3, clear_ratio: 0.8 };
//! let mut state = AlarmState::new(policy).unwrap();
//! let score = proto.score(&[0.2, 3.0]).unwrap();
//! assert_eq!(state.update(score), AlarmTransition::None);
//! assert_eq!(state.update(score), AlarmTransition::Raised);
//! ```
#![cfg_attr(not(any(feature = "std", test)), no_std)]
#![forbid(unsafe_code)]

pub mod adapt;
pub mod agent;
pub mod alarm;
pub mod bearing;
pub mod dsp;
mod error;
pub mod features;
pub mod head;
pub mod hex;
pub mod kinematics;
pub mod normalise;
pub mod report;
pub mod resample;
pub mod sensor;
pub mod update;
pub mod wire;

pub use error::CoreError;
pub use heapless;

/// Largest number of classes a head may have.
pub const MAX_CLASSES: usize = 8;
/// Number of most-contributing frequency bands carried in a report.
pub const MAX_TOP_BANDS: usize = 3;
