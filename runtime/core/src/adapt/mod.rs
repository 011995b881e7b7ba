//! On-site adaptation: how a device fits the pretrained model to its own machine.
//!
//! One pretrained model must serve many machines. Two mechanisms adapt it on the device,
//! both in fixed memory and without allocation, so the gateway and the firmware run the
//! same rule:
//!
//! - [`site::SiteAdapter`] (unsupervised) learns the site's normal state: a commissioning
//!   period learns the prototype (mean and diagonal variance of the embeddings) and then
//!   calibrates the alarm threshold to a configured false-alarm rate; once armed, windows
//!   scored confidently normal move the prototype slowly, at most one every few windows.
//!   The commissioned state is kept frozen, so [`site::SiteAdapter::rollback`] returns to
//!   it.
//! - [`label::LabelAdapter`] (supervised) takes a technician's label for a window's
//!   embedding, runs a few SGD steps on the head with a pull towards the shipped head
//!   (L2-SP), and keeps the step only when accuracy on its replay buffer (a fixed number
//!   of earlier labelled embeddings per class) does not fall and the new sample is now
//!   classified as labelled. Otherwise it rolls the head back and drops the label.
//!
//! [`AdaptationStats`] counts what each did; it travels after a head snapshot so that a
//! host can weight a fleet merge by the samples each device learned from.

pub mod label;
pub mod site;

use crate::update::HeadUpdate;
use serde::{Deserialize, Serialize};

/// A head snapshot as it travels from a device to the host: the head it runs (as a
/// [`HeadUpdate`]), then what its adaptation learned from. A device without adaptation
/// sends the head alone; [`HeadSnapshot::decode`] reads both forms. The one definition
/// of the format (`docs/wire-format.md`, "Head snapshots").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadSnapshot {
    /// The head, prototype, threshold and alarm policy the device runs.
    pub head: HeadUpdate,
    /// What its adaptation learned from (all zero without adaptation).
    pub stats: AdaptationStats,
}

impl HeadSnapshot {
    /// Reads a snapshot's postcard bytes, with or without the trailing counts.
    pub fn decode(bytes: &[u8]) -> Result<Self, postcard::Error> {
        let (head, rest): (HeadUpdate, _) = postcard::take_from_bytes(bytes)?;
        let stats = if rest.is_empty() { AdaptationStats::default() } else { postcard::from_bytes(rest)? };
        Ok(HeadSnapshot { head, stats })
    }
}

/// What a device's adaptation has learned from, sent after its head snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AdaptationStats {
    /// Windows the site adaptation has seen (commissioning included).
    pub windows_seen: u32,
    /// Times the armed prototype moved towards a confidently normal window.
    pub prototype_updates: u32,
    /// Labels whose SGD steps were kept.
    pub labels_accepted: u32,
    /// Labels whose SGD steps were rolled back.
    pub labels_rejected: u32,
}

#[cfg(test)]
mod tests {
    use super::AdaptationStats;

    #[test]
    fn the_snapshot_trailer_matches_the_specification() {
        let stats = AdaptationStats {
            windows_seen: 300,
            prototype_updates: 5,
            labels_accepted: 1,
            labels_rejected: 0,
        };
        let mut buf = [0u8; 32];
        let bytes = postcard::to_slice(&stats, &mut buf).unwrap();
        let hex: std::vec::Vec<std::string::String> = bytes.iter().map(|b| std::format!("{b:02x}")).collect();
        let doc = include_str!("../../../../docs/wire-format.md");
        let line = std::format!("snapshot trailer: {}", hex.join(" "));
        assert!(doc.contains(&line), "docs/wire-format.md lacks `{line}`");
    }
}
