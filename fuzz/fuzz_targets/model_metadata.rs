//! Feeds arbitrary text to the model-metadata reader, as a model file from anyone would
//! carry it in its `metadata_props`: each line `key=value`. What it accepts must be
//! complete, finite and in range, and read back the same after being written.
//!
//! Run: `scripts/fuzz model_metadata [SECONDS]` (cargo-fuzz, nightly).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_runtime::metadata::ModelMetadata;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let props: Vec<(&str, &str)> = text.lines().filter_map(|l| l.split_once('=')).collect();
    let Ok(meta) = ModelMetadata::from_props(props) else { return };
    assert!(meta.prototype_mean.iter().all(|v| v.is_finite()));
    assert!(meta.prototype_var.iter().all(|v| v.is_finite() && *v >= 0.0));
    assert!(meta.alarm.threshold.is_finite() && meta.alarm.threshold > 0.0);
    assert!(meta.normal_class < meta.class_names.len());
    let written = meta.to_props();
    let again = ModelMetadata::from_props(written.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .expect("written metadata reads back");
    assert_eq!(again.to_props(), written, "metadata does not round-trip");
});
