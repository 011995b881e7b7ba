//! Vigil's model metadata, stored in the ONNX file's `metadata_props`.
//!
//! Every key starts with `vigil.`. [`ModelMetadata::to_props`] and
//! [`ModelMetadata::from_props`] are the only places that know the key names, so the
//! exporter and the runtime cannot drift apart.

use crate::error::{Result, RuntimeError};
use std::collections::BTreeMap;
use vigil_core::alarm::AlarmPolicy;
use vigil_core::normalise::{Centre, Normalisation, Scaling};

/// Everything the runtime needs to know about a model besides its graph.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelMetadata {
    /// Sample rate the model was trained at, in Hz.
    pub sample_rate_hz: f64,
    /// Samples per window, per channel.
    pub window: usize,
    /// Default hop between consecutive windows, in samples.
    pub hop: usize,
    /// Number of sensor channels.
    pub channels: usize,
    /// Class names, in logit order.
    pub class_names: Vec<String>,
    /// Index of the class that means "healthy".
    pub normal_class: usize,
    /// Name of the graph input.
    pub input_name: String,
    /// Name of the node whose output is the embedding.
    pub embedding_node: String,
    /// Name of the node whose output is the logits of the full model.
    pub logits_node: String,
    /// Initializer holding the head's `K x D` weights.
    pub head_weight: String,
    /// Initializer holding the head's `K` biases.
    pub head_bias: String,
    /// Normalisation applied to each window channel.
    pub normalisation: Normalisation,
    /// Normal-state prototype: mean of normal embeddings.
    pub prototype_mean: Vec<f32>,
    /// Normal-state prototype: variance of normal embeddings.
    pub prototype_var: Vec<f32>,
    /// Alarm policy, including the calibrated threshold.
    pub alarm: AlarmPolicy,
    /// Normal-state energy per frequency band (equal bands from 0 to Nyquist) of a
    /// normalised window, for naming the bands that contribute to an alarm.
    pub baseline_bands: Vec<f32>,
    /// Version of the head (increases with every update).
    pub head_version: u32,
}

const PREFIX: &str = "vigil.";

fn join(values: &[f32]) -> String {
    values.iter().map(|v| format!("{v:e}")).collect::<Vec<_>>().join(",")
}

impl ModelMetadata {
    /// Normalises every channel of a window (`channels * window` values, channel-major)
    /// in place, as the scorer does before the backbone.
    pub fn normalise(&self, window: &mut [f32]) {
        for channel in window.chunks_exact_mut(self.window) {
            self.normalisation.apply(channel);
        }
    }

    /// The metadata as `(key, value)` pairs for `metadata_props`.
    pub fn to_props(&self) -> Vec<(String, String)> {
        let centre = match self.normalisation.centre {
            Centre::None => "none",
            Centre::WindowMean => "window_mean",
        };
        let entries: Vec<(&str, String)> = vec![
            ("sample_rate_hz", self.sample_rate_hz.to_string()),
            ("window", self.window.to_string()),
            ("hop", self.hop.to_string()),
            ("channels", self.channels.to_string()),
            ("class_names", self.class_names.join(",")),
            ("normal_class", self.normal_class.to_string()),
            ("input_name", self.input_name.clone()),
            ("embedding_node", self.embedding_node.clone()),
            ("logits_node", self.logits_node.clone()),
            ("head_weight", self.head_weight.clone()),
            ("head_bias", self.head_bias.clone()),
            ("norm.centre", centre.to_string()),
            (
                "norm.scale",
                match self.normalisation.scaling {
                    Scaling::Fixed(s) => format!("{s:e}"),
                    Scaling::WindowRms { floor } => format!("window_rms:{floor:e}"),
                },
            ),
            ("prototype.mean", join(&self.prototype_mean)),
            ("prototype.var", join(&self.prototype_var)),
            ("alarm.threshold", format!("{:e}", self.alarm.threshold)),
            ("alarm.raise_k", self.alarm.raise_k.to_string()),
            ("alarm.window_n", self.alarm.window_n.to_string()),
            ("alarm.clear_ratio", self.alarm.clear_ratio.to_string()),
            ("baseline_bands", join(&self.baseline_bands)),
            ("head_version", self.head_version.to_string()),
        ];
        entries.into_iter().map(|(k, v)| (format!("{PREFIX}{k}"), v)).collect()
    }

    /// Reads the metadata back, naming the key of the first problem found.
    pub fn from_props<'a>(props: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self> {
        let map: BTreeMap<&str, &str> =
            props.into_iter().filter_map(|(k, v)| Some((k.strip_prefix(PREFIX)?, v))).collect();
        if map.is_empty() {
            return Err(RuntimeError::Metadata {
                key: format!("{PREFIX}*"),
                problem: "the model carries no Vigil metadata; export it with `vigil pretrain` \
                          or `vigil fine-tune`, which write it"
                    .into(),
            });
        }
        let r = PropReader { map };
        let class_names: Vec<String> =
            r.get("class_names")?.split(',').map(|s| s.trim().to_string()).collect();
        let centre = match r.get("norm.centre")? {
            "none" => Centre::None,
            "window_mean" => Centre::WindowMean,
            other => return Err(r.bad("norm.centre", format!("unknown centring `{other}`"))),
        };
        let meta = ModelMetadata {
            sample_rate_hz: r.parse("sample_rate_hz")?,
            window: r.parse("window")?,
            hop: r.parse("hop")?,
            channels: r.parse("channels")?,
            normal_class: r.parse("normal_class")?,
            input_name: r.get("input_name")?.to_string(),
            embedding_node: r.get("embedding_node")?.to_string(),
            logits_node: r.get("logits_node")?.to_string(),
            head_weight: r.get("head_weight")?.to_string(),
            head_bias: r.get("head_bias")?.to_string(),
            normalisation: Normalisation { centre, scaling: r.scaling("norm.scale")? },
            prototype_mean: r.floats("prototype.mean")?,
            prototype_var: r.floats("prototype.var")?,
            alarm: AlarmPolicy {
                threshold: r.parse("alarm.threshold")?,
                raise_k: r.parse("alarm.raise_k")?,
                window_n: r.parse("alarm.window_n")?,
                clear_ratio: r.parse("alarm.clear_ratio")?,
            },
            baseline_bands: r.floats("baseline_bands")?,
            head_version: r.parse("head_version")?,
            class_names,
        };
        meta.validate()?;
        Ok(meta)
    }

    fn validate(&self) -> Result<()> {
        let bad = |key: &str, problem: &str| RuntimeError::Metadata {
            key: format!("{PREFIX}{key}"),
            problem: problem.to_string(),
        };
        if !(self.sample_rate_hz.is_finite() && self.sample_rate_hz > 0.0) {
            return Err(bad("sample_rate_hz", "must be a positive number of Hz"));
        }
        if self.window == 0 || self.hop == 0 {
            return Err(bad("window", "window and hop must be at least 1 sample"));
        }
        if self.channels == 0 {
            return Err(bad("channels", "must be at least 1"));
        }
        if self.class_names.is_empty() || self.class_names.len() > vigil_core::MAX_CLASSES {
            return Err(bad("class_names", "needs 1 to 8 comma-separated names"));
        }
        if self.normal_class >= self.class_names.len() {
            return Err(bad("normal_class", "is not the index of one of the classes"));
        }
        if self.prototype_mean.len() != self.prototype_var.len() {
            return Err(bad("prototype.var", "must have as many values as prototype.mean"));
        }
        let first = |values: &[f32], ok: fn(f32) -> bool| values.iter().position(|&v| !ok(v));
        if let Some(i) = first(&self.prototype_mean, f32::is_finite) {
            return Err(bad(
                "prototype.mean",
                &format!("value {i} is {}; must be finite", self.prototype_mean[i]),
            ));
        }
        if let Some(i) = first(&self.prototype_var, |v| v.is_finite() && v >= 0.0) {
            return Err(bad(
                "prototype.var",
                &format!(
                    "value {i} is {}; a variance must be finite and not negative",
                    self.prototype_var[i]
                ),
            ));
        }
        // Band energies of a window's spectrum: at most one band per frequency bin.
        let bins = self.window / 2 + 1;
        if self.baseline_bands.len() > bins {
            return Err(bad(
                "baseline_bands",
                &format!(
                    "has {} values; a {}-sample window's spectrum has {bins} bins, so at most {bins} bands",
                    self.baseline_bands.len(),
                    self.window
                ),
            ));
        }
        if let Some(i) = first(&self.baseline_bands, |v| v.is_finite() && v >= 0.0) {
            return Err(bad(
                "baseline_bands",
                &format!(
                    "value {i} is {}; a band energy must be finite and not negative",
                    self.baseline_bands[i]
                ),
            ));
        }
        let a = &self.alarm;
        if !(a.threshold.is_finite() && a.threshold > 0.0) {
            return Err(bad("alarm.threshold", &format!("is {}; must be a positive number", a.threshold)));
        }
        if !(a.clear_ratio > 0.0 && a.clear_ratio <= 1.0) {
            return Err(bad("alarm.clear_ratio", &format!("is {}; must be in (0, 1]", a.clear_ratio)));
        }
        self.alarm.validate().map_err(|e| bad("alarm.raise_k", &e.to_string()))?;
        Ok(())
    }
}

struct PropReader<'a> {
    map: BTreeMap<&'a str, &'a str>,
}

impl<'a> PropReader<'a> {
    fn bad(&self, key: &str, problem: String) -> RuntimeError {
        RuntimeError::Metadata { key: format!("{PREFIX}{key}"), problem }
    }

    fn get(&self, key: &str) -> Result<&'a str> {
        self.map
            .get(key)
            .copied()
            .ok_or_else(|| self.bad(key, "missing; the model's Vigil metadata is incomplete".to_string()))
    }

    fn parse<T: std::str::FromStr>(&self, key: &str) -> Result<T> {
        let raw = self.get(key)?;
        raw.trim()
            .parse()
            .map_err(|_| self.bad(key, format!("cannot read `{raw}` as a {}", std::any::type_name::<T>())))
    }

    fn scaling(&self, key: &str) -> Result<Scaling> {
        let raw = self.get(key)?;
        let number = |s: &str| {
            s.trim().parse::<f32>().ok().filter(|v| v.is_finite() && *v > 0.0).ok_or_else(|| {
                self.bad(key, format!("`{raw}` is neither a positive number nor `window_rms:<floor>`"))
            })
        };
        match raw.strip_prefix("window_rms:") {
            Some(floor) => Ok(Scaling::WindowRms { floor: number(floor)? }),
            None => Ok(Scaling::Fixed(number(raw)?)),
        }
    }

    fn floats(&self, key: &str) -> Result<Vec<f32>> {
        let raw = self.get(key)?;
        if raw.trim().is_empty() {
            return Ok(Vec::new());
        }
        raw.split(',')
            .enumerate()
            .map(|(i, s)| {
                s.trim()
                    .parse::<f32>()
                    .map_err(|_| self.bad(key, format!("value {i} (`{s}`) is not a number")))
            })
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> ModelMetadata {
        ModelMetadata {
            sample_rate_hz: 16000.0,
            window: 2048,
            hop: 1024,
            channels: 1,
            class_names: vec!["normal".into(), "outer_race".into()],
            normal_class: 0,
            input_name: "signal".into(),
            embedding_node: "embedding".into(),
            logits_node: "logits".into(),
            head_weight: "head.weight".into(),
            head_bias: "head.bias".into(),
            normalisation: Normalisation {
                centre: Centre::WindowMean,
                scaling: Scaling::WindowRms { floor: 1e-4 },
            },
            prototype_mean: vec![0.1, -2.5e-7, 3.0],
            prototype_var: vec![1.0, 0.5, 1e-3],
            alarm: AlarmPolicy { threshold: 4.5, raise_k: 3, window_n: 5, clear_ratio: 0.6 },
            baseline_bands: vec![1e-3, 2e-4],
            head_version: 1,
        }
    }

    #[test]
    fn metadata_round_trips_through_props() {
        let m = sample();
        let props = m.to_props();
        let back = ModelMetadata::from_props(props.iter().map(|(k, v)| (k.as_str(), v.as_str()))).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn errors_name_the_key() {
        let mut props = sample().to_props();
        props.retain(|(k, _)| k != "vigil.window");
        let e = ModelMetadata::from_props(props.iter().map(|(k, v)| (k.as_str(), v.as_str()))).unwrap_err();
        assert!(e.to_string().contains("vigil.window"), "{e}");
        let mut props = sample().to_props();
        for (k, v) in props.iter_mut() {
            if k == "vigil.prototype.mean" {
                *v = "1,x,3".into();
            }
        }
        let e = ModelMetadata::from_props(props.iter().map(|(k, v)| (k.as_str(), v.as_str()))).unwrap_err();
        assert!(e.to_string().contains("value 1 (`x`)"), "{e}");
        let e = ModelMetadata::from_props([("producer", "x")]).unwrap_err();
        assert!(e.to_string().contains("no Vigil metadata"), "{e}");
    }

    /// The campaign's finding: a negative or NaN `prototype.var` passed the load and
    /// panicked at the first window ("entered unreachable code"); NaN elsewhere gave
    /// alarms scored NaN; `clear_ratio` NaN was reported under the threshold's key.
    #[test]
    fn values_that_would_score_nan_or_panic_are_refused_under_their_own_key() {
        let with = |key: &str, value: &str| {
            let mut props = sample().to_props();
            props.iter_mut().filter(|(k, _)| k == key).for_each(|(_, v)| *v = value.into());
            ModelMetadata::from_props(props.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .unwrap_err()
                .to_string()
        };
        for (key, value, says) in [
            ("vigil.prototype.var", "1,-0.5,1", "value 1 is -0.5"),
            ("vigil.prototype.var", "1,NaN,1", "value 1 is NaN"),
            ("vigil.prototype.mean", "inf,0,1", "value 0 is inf"),
            ("vigil.alarm.clear_ratio", "NaN", "is NaN"),
            ("vigil.alarm.threshold", "-1", "is -1"),
        ] {
            let e = with(key, value);
            assert!(e.contains(key) && e.contains(says), "{key}={value}: {e}");
        }
    }
}
