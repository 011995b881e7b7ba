//! Decoding a [`HeadUpdate`] in place.
//!
//! A head update holds fixed-capacity vectors of up to 2,048 weights. Decoding one by
//! value, as serde's derived code does, moves it through several temporaries on the way
//! out (57 KiB of stack on a Cortex-M4). [`HeadUpdate::decode_into`] reads the same
//! postcard bytes straight into an existing value, so a microcontroller needs one head's
//! worth of memory and no more.

use super::{HeadUpdate, HeadWeights};
use crate::alarm::AlarmPolicy;
use core::fmt;
use core::marker::PhantomData;
use heapless::Vec;
use serde::de::{DeserializeSeed, Deserializer, EnumAccess, Error, SeqAccess, VariantAccess, Visitor};
use serde::Deserialize;

impl HeadUpdate {
    /// An empty head (no classes, no weights), to decode into.
    pub const fn empty() -> Self {
        HeadUpdate {
            model_hash: [0; 32],
            version: 0,
            inputs: 0,
            classes: 0,
            weights: HeadWeights::F32(Vec::new()),
            bias: Vec::new(),
            prototype_mean: Vec::new(),
            prototype_var: Vec::new(),
            alarm: AlarmPolicy { threshold: 1.0, raise_k: 1, window_n: 1, clear_ratio: 1.0 },
        }
    }

    /// Decodes the postcard bytes of a head update into `self`, replacing what it held;
    /// the result equals `postcard::from_bytes`. On error `self` holds a partial head.
    pub fn decode_into(&mut self, bytes: &[u8]) -> Result<(), postcard::Error> {
        let mut deserializer = postcard::Deserializer::from_bytes(bytes);
        InPlace(self).deserialize(&mut deserializer)
    }
}

/// A seed that fills the value it borrows.
struct InPlace<'t, T>(&'t mut T);

/// Fields of [`HeadUpdate`], in declaration order (the postcard order).
const FIELDS: &[&str] = &[
    "model_hash",
    "version",
    "inputs",
    "classes",
    "weights",
    "bias",
    "prototype_mean",
    "prototype_var",
    "alarm",
];

impl<'de> DeserializeSeed<'de> for InPlace<'_, HeadUpdate> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_struct("HeadUpdate", FIELDS, self)
    }
}

impl<'de> Visitor<'de> for InPlace<'_, HeadUpdate> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a head update")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let head = self.0;
        let missing = |i: usize| A::Error::invalid_length(i, &"a head update");
        head.model_hash = seq.next_element()?.ok_or_else(|| missing(0))?;
        head.version = seq.next_element()?.ok_or_else(|| missing(1))?;
        head.inputs = seq.next_element()?.ok_or_else(|| missing(2))?;
        head.classes = seq.next_element()?.ok_or_else(|| missing(3))?;
        seq.next_element_seed(InPlace(&mut head.weights))?.ok_or_else(|| missing(4))?;
        seq.next_element_seed(InPlace(&mut head.bias))?.ok_or_else(|| missing(5))?;
        seq.next_element_seed(InPlace(&mut head.prototype_mean))?.ok_or_else(|| missing(6))?;
        seq.next_element_seed(InPlace(&mut head.prototype_var))?.ok_or_else(|| missing(7))?;
        head.alarm = seq.next_element()?.ok_or_else(|| missing(8))?;
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for InPlace<'_, HeadWeights> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_enum("HeadWeights", &["F32", "Int8"], self)
    }
}

impl<'de> Visitor<'de> for InPlace<'_, HeadWeights> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("head weights")
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        let (variant, access) = data.variant::<u32>()?;
        match variant {
            0 => {
                if !matches!(self.0, HeadWeights::F32(_)) {
                    *self.0 = HeadWeights::F32(Vec::new());
                }
                let HeadWeights::F32(values) = self.0 else { unreachable!("set just above") };
                access.newtype_variant_seed(InPlace(values))
            }
            1 => {
                if !matches!(self.0, HeadWeights::Int8 { .. }) {
                    *self.0 = HeadWeights::Int8 { values: Vec::new(), scales: Vec::new() };
                }
                let HeadWeights::Int8 { values, scales } = self.0 else { unreachable!("set just above") };
                access.struct_variant(&["values", "scales"], Int8Fields { values, scales })
            }
            other => Err(A::Error::custom(format_args!("unknown head weights variant {other}"))),
        }
    }
}

struct Int8Fields<'t, const V: usize, const S: usize> {
    values: &'t mut Vec<i8, V>,
    scales: &'t mut Vec<f32, S>,
}

impl<'de, const V: usize, const S: usize> Visitor<'de> for Int8Fields<'_, V, S> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("int8 weights and scales")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        seq.next_element_seed(InPlace(self.values))?.ok_or_else(|| A::Error::invalid_length(0, &self))?;
        seq.next_element_seed(InPlace(self.scales))?.ok_or_else(|| A::Error::invalid_length(1, &"scales"))?;
        Ok(())
    }
}

impl<'de, T: Deserialize<'de>, const N: usize> DeserializeSeed<'de> for InPlace<'_, Vec<T, N>> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        self.0.clear();
        deserializer.deserialize_seq(VecVisitor(self.0, PhantomData))
    }
}

struct VecVisitor<'t, 'de, T, const N: usize>(&'t mut Vec<T, N>, PhantomData<&'de ()>);

impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for VecVisitor<'_, 'de, T, N> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a sequence of at most {N} values")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(value) = seq.next_element()? {
            self.0.push(value).map_err(|_| A::Error::invalid_length(N + 1, &self))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::update::tests::head_update;

    #[test]
    fn decoding_in_place_equals_decoding_by_value() {
        let mut target = HeadUpdate::empty();
        for int8 in [false, true, false] {
            let head = head_update(3, 16, 4, int8);
            let bytes = postcard::to_allocvec(&head).unwrap();
            target.decode_into(&bytes).unwrap();
            assert_eq!(target, postcard::from_bytes::<HeadUpdate>(&bytes).unwrap());
            assert_eq!(target, head);
            // Every truncation is an error, never a panic.
            for cut in 0..bytes.len() {
                assert!(HeadUpdate::empty().decode_into(&bytes[..cut]).is_err(), "cut at {cut}");
            }
        }
    }
}
