//! Signed head updates: what travels, how it is signed, and how a device stores it.
//!
//! An update is a payload (a [`HeadUpdate`] serialised with postcard) described by an
//! [`UpdateHeader`]: the model it applies to, a version, the payload length and its
//! SHA-256. The publisher signs the header with Ed25519 (the header carries the payload's
//! hash, so the signature covers the payload). A device applies an update only when the
//! signature verifies with its provisioned public key, the payload matches the hash, the
//! model is the one it runs and the version is above the active one; it stores updates in
//! A/B slots ([`slots`]) so that a torn write leaves the previous head active.

mod decode;
pub mod slots;

use crate::alarm::AlarmPolicy;
use crate::head::{HeadRef, PrototypeRef};
use crate::wire::{NackReason, Signature};
use crate::{CoreError, MAX_CLASSES};
use heapless::Vec;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Largest embedding a head update may take.
pub const MAX_EMBEDDING: usize = 256;
/// Largest number of head weights (`MAX_CLASSES * MAX_EMBEDDING`).
pub const MAX_HEAD_WEIGHTS: usize = MAX_CLASSES * MAX_EMBEDDING;
/// Domain separation prefix of the signed bytes, so no other Vigil signature can be
/// replayed as an update signature.
pub const SIGNING_DOMAIN: &[u8] = b"vigil-update-v1\0";
/// The largest step by which one update may raise a device's head version, unless the
/// device is configured otherwise. Versions only grow, as MCUboot's security counter does;
/// the bound keeps one signed update with a mistyped or hostile version (4294967295, say)
/// from blocking every later update.
pub const MAX_VERSION_STEP: u32 = 1000;
/// Longest serialised [`UpdateHeader`].
pub const MAX_HEADER: usize = 96;

/// What an update replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum UpdateKind {
    /// The classification head, prototype, threshold and alarm policy.
    Head,
}

/// Describes an update; signed by the publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct UpdateHeader {
    /// What the payload replaces.
    pub kind: UpdateKind,
    /// SHA-256 of the model file the update applies to.
    pub model_hash: [u8; 32],
    /// Version; a device applies only versions above its active one.
    pub version: u32,
    /// Payload length in bytes.
    pub length: u32,
    /// SHA-256 of the payload.
    pub sha256: [u8; 32],
}

impl UpdateHeader {
    /// The header of `payload`.
    pub fn for_payload(kind: UpdateKind, model_hash: [u8; 32], version: u32, payload: &[u8]) -> Self {
        UpdateHeader {
            kind,
            model_hash,
            version,
            length: payload.len() as u32,
            sha256: Sha256::digest(payload).into(),
        }
    }

    /// The bytes a publisher signs: [`SIGNING_DOMAIN`] then the postcard header. Returns
    /// the buffer and the length used.
    pub fn signed_bytes(&self) -> ([u8; SIGNING_DOMAIN.len() + MAX_HEADER], usize) {
        let mut buf = [0u8; SIGNING_DOMAIN.len() + MAX_HEADER];
        buf[..SIGNING_DOMAIN.len()].copy_from_slice(SIGNING_DOMAIN);
        // A header is at most 1 + 32 + 5 + 5 + 32 bytes, well inside MAX_HEADER.
        let used = postcard::to_slice(self, &mut buf[SIGNING_DOMAIN.len()..]).map(|s| s.len()).unwrap_or(0);
        (buf, SIGNING_DOMAIN.len() + used)
    }

    /// Checks `signature` over this header with the Ed25519 `public_key`.
    pub fn verify(&self, signature: Option<&Signature>, public_key: &[u8; 32]) -> Result<(), NackReason> {
        let signature = signature.ok_or(NackReason::Unsigned)?;
        let key =
            ed25519_dalek::VerifyingKey::from_bytes(public_key).map_err(|_| NackReason::BadSignature)?;
        let (bytes, len) = self.signed_bytes();
        key.verify_strict(&bytes[..len], &ed25519_dalek::Signature::from_bytes(&signature.0))
            .map_err(|_| NackReason::BadSignature)
    }
}

/// Head weights as they travel: plain f32, or int8 with one scale per class row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
// Fixed capacity is the point of a no_std, allocation-free type: no Box to even it out.
#[allow(clippy::large_enum_variant)]
pub enum HeadWeights {
    /// Row-major `classes x inputs` floats.
    F32(Vec<f32, MAX_HEAD_WEIGHTS>),
    /// Row-major `classes x inputs` int8 values; weight = value * scale of its row.
    Int8 {
        /// Quantised weights.
        values: Vec<i8, MAX_HEAD_WEIGHTS>,
        /// One scale per class.
        scales: Vec<f32, MAX_CLASSES>,
    },
}

/// The payload of a head update: everything a device needs to classify and score with a
/// new head on the backbone it already runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadUpdate {
    /// SHA-256 of the model file whose backbone produces the embeddings.
    pub model_hash: [u8; 32],
    /// Version of this head.
    pub version: u32,
    /// Embedding dimension.
    pub inputs: u16,
    /// Number of classes.
    pub classes: u8,
    /// The dense layer's weights.
    pub weights: HeadWeights,
    /// The dense layer's bias, one per class.
    pub bias: Vec<f32, MAX_CLASSES>,
    /// Mean of the embeddings of normal windows.
    pub prototype_mean: Vec<f32, MAX_EMBEDDING>,
    /// Diagonal variance of the embeddings of normal windows.
    pub prototype_var: Vec<f32, MAX_EMBEDDING>,
    /// Threshold and alarm configuration.
    pub alarm: AlarmPolicy,
}

/// A head as plain slices, for [`HeadUpdate::from_parts`]: weights row-major
/// `classes x inputs`, where `classes` is the bias's length and `inputs` the prototype's.
#[derive(Debug, Clone, Copy)]
pub struct HeadParts<'a> {
    /// SHA-256 of the model file whose backbone produces the embeddings.
    pub model_hash: [u8; 32],
    /// Version of the head.
    pub version: u32,
    /// The dense layer's weights, row-major `classes x inputs`.
    pub weights: &'a [f32],
    /// The dense layer's bias, one per class.
    pub bias: &'a [f32],
    /// Mean of the embeddings of normal windows.
    pub prototype_mean: &'a [f32],
    /// Diagonal variance of the embeddings of normal windows.
    pub prototype_var: &'a [f32],
    /// Threshold and alarm configuration.
    pub alarm: AlarmPolicy,
    /// Carry the weights as int8 with one scale per class row ([`quantise_rows`]).
    pub int8: bool,
}

impl HeadUpdate {
    /// The one way to build a head update: from its parts, checked ([`HeadUpdate::validate`]),
    /// with an error naming what exceeds a head update's capacity.
    pub fn from_parts(parts: HeadParts<'_>) -> Result<Self, CoreError> {
        let inputs = parts.prototype_mean.len();
        let classes = parts.bias.len();
        let capped = |what, max: usize, actual: usize| {
            if actual > max {
                Err(CoreError::TooLarge { what, max, actual })
            } else {
                Ok(())
            }
        };
        capped("the embedding", MAX_EMBEDDING, inputs)?;
        capped("the bias", MAX_CLASSES, classes)?;
        capped("the head", MAX_HEAD_WEIGHTS, parts.weights.len())?;
        crate::error::check_len(inputs * classes, parts.weights.len())?;
        let weights = if parts.int8 {
            quantise_rows(parts.weights, inputs)?
        } else {
            HeadWeights::F32(fixed(parts.weights)?)
        };
        let update = HeadUpdate {
            model_hash: parts.model_hash,
            version: parts.version,
            inputs: inputs as u16,
            classes: classes as u8,
            weights,
            bias: fixed(parts.bias)?,
            prototype_mean: fixed(parts.prototype_mean)?,
            prototype_var: fixed(parts.prototype_var)?,
            alarm: parts.alarm,
        };
        update.validate()?;
        Ok(update)
    }

    /// Whether this update fits a device: made for the model whose file hashes to
    /// `model_hash`, for an embedding of `inputs` values and (when given) `classes`
    /// classes, and valid ([`HeadUpdate::validate`]). The error is the refusal the device
    /// answers. The one check every device runs before it applies a head.
    pub fn fits(
        &self,
        model_hash: &[u8; 32],
        inputs: usize,
        classes: Option<usize>,
    ) -> Result<(), NackReason> {
        if self.model_hash != *model_hash {
            return Err(NackReason::OtherModel);
        }
        let shape =
            usize::from(self.inputs) == inputs && classes.is_none_or(|c| c == usize::from(self.classes));
        if !shape || self.validate().is_err() {
            return Err(NackReason::BadPayload);
        }
        Ok(())
    }

    /// Checks that the dimensions agree and every value is finite.
    pub fn validate(&self) -> Result<(), CoreError> {
        let (inputs, classes) = (self.inputs as usize, self.classes as usize);
        if classes == 0 || classes > MAX_CLASSES {
            return Err(CoreError::ClassCount(classes));
        }
        let weights_len = match &self.weights {
            HeadWeights::F32(w) => check_finite(w)?.len(),
            HeadWeights::Int8 { values, scales } => {
                crate::error::check_len(classes, scales.len())?;
                check_finite(scales)?;
                values.len()
            }
        };
        crate::error::check_len(inputs * classes, weights_len)?;
        crate::error::check_len(classes, check_finite(&self.bias)?.len())?;
        check_finite(&self.prototype_mean)?;
        PrototypeRef::new(&self.prototype_mean, &self.prototype_var)?;
        crate::error::check_len(inputs, self.prototype_mean.len())?;
        self.alarm.validate()
    }

    /// Writes the f32 weights (dequantised when int8) into `out` (`classes * inputs`).
    pub fn weights_into(&self, out: &mut [f32]) -> Result<(), CoreError> {
        let inputs = self.inputs as usize;
        match &self.weights {
            HeadWeights::F32(w) => {
                crate::error::check_len(w.len(), out.len())?;
                out.copy_from_slice(w);
            }
            HeadWeights::Int8 { values, scales } => {
                crate::error::check_len(values.len(), out.len())?;
                for (i, (o, &v)) in out.iter_mut().zip(values.iter()).enumerate() {
                    *o = v as f32 * scales.get(i / inputs.max(1)).copied().unwrap_or(0.0);
                }
            }
        }
        Ok(())
    }

    /// The head over `weights` (from [`HeadUpdate::weights_into`]).
    pub fn head<'a>(&'a self, weights: &'a [f32]) -> Result<HeadRef<'a>, CoreError> {
        HeadRef::new(weights, &self.bias, self.inputs as usize, self.classes as usize)
    }

    /// The normal-state prototype.
    pub fn prototype(&self) -> Result<PrototypeRef<'_>, CoreError> {
        PrototypeRef::new(&self.prototype_mean, &self.prototype_var)
    }
}

/// `values` in a fixed-capacity vector of a head update (capacity `N`, such as
/// [`MAX_HEAD_WEIGHTS`], [`MAX_CLASSES`] or [`MAX_EMBEDDING`]).
pub fn fixed<const N: usize>(values: &[f32]) -> Result<Vec<f32, N>, CoreError> {
    Vec::from_slice(values).map_err(|_| CoreError::LengthMismatch { expected: N, actual: values.len() })
}

/// Quantises row-major `classes x inputs` weights to int8, one symmetric scale per row.
pub fn quantise_rows(weights: &[f32], inputs: usize) -> Result<HeadWeights, CoreError> {
    let mut values = Vec::new();
    let mut scales = Vec::new();
    if inputs == 0 || !weights.len().is_multiple_of(inputs) {
        return Err(CoreError::LengthMismatch { expected: inputs, actual: weights.len() });
    }
    for row in weights.chunks_exact(inputs) {
        let max = row.iter().fold(0.0f32, |m, w| m.max(w.abs()));
        let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
        scales.push(scale).map_err(|_| CoreError::ClassCount(weights.len() / inputs))?;
        for w in row {
            let q = libm::roundf(w / scale).clamp(-127.0, 127.0) as i8;
            values.push(q).map_err(|_| CoreError::LengthMismatch {
                expected: MAX_HEAD_WEIGHTS,
                actual: weights.len(),
            })?;
        }
    }
    Ok(HeadWeights::Int8 { values, scales })
}

fn check_finite(values: &[f32]) -> Result<&[f32], CoreError> {
    if values.iter().all(|v| v.is_finite()) {
        Ok(values)
    } else {
        Err(CoreError::NotFinite)
    }
}

#[cfg(test)]
pub(crate) mod tests;
