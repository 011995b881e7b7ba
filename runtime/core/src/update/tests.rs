use super::slots::{Region, Slot, SlotStorage, Slots, RECORD_LEN};
use super::*;
use crate::wire::{NackReason, Signature};
use ed25519_dalek::{Signer, SigningKey};
use std::vec::Vec;

const MODEL: [u8; 32] = [0xAB; 32];

/// Update storage in memory, with a power cut after a budget of written bytes (an erase
/// counts as one).
#[derive(Debug, Clone, Default)]
pub(crate) struct RamStorage {
    regions: [Vec<u8>; 4],
    budget: Option<usize>,
}

#[derive(Debug, PartialEq)]
pub(crate) struct PowerCut;

impl RamStorage {
    fn index(region: Region) -> usize {
        match region {
            Region::Slot(Slot::A) => 0,
            Region::Slot(Slot::B) => 1,
            Region::Record(Slot::A) => 2,
            Region::Record(Slot::B) => 3,
        }
    }

    /// Spends `n` bytes of the budget; returns how many may be written.
    fn spend(&mut self, n: usize) -> usize {
        match &mut self.budget {
            None => n,
            Some(left) => {
                let granted = n.min(*left);
                *left -= granted;
                granted
            }
        }
    }
}

impl SlotStorage for RamStorage {
    type Error = PowerCut;

    fn slot_capacity(&self) -> u32 {
        8192
    }

    fn erase(&mut self, region: Region) -> Result<(), PowerCut> {
        if self.spend(1) == 0 {
            return Err(PowerCut);
        }
        self.regions[Self::index(region)].clear();
        Ok(())
    }

    fn write(&mut self, region: Region, offset: u32, data: &[u8]) -> Result<(), PowerCut> {
        let granted = self.spend(data.len());
        let bytes = &mut self.regions[Self::index(region)];
        let end = offset as usize + granted;
        if bytes.len() < end {
            bytes.resize(end, 0xFF);
        }
        bytes[offset as usize..end].copy_from_slice(&data[..granted]);
        if granted < data.len() {
            return Err(PowerCut);
        }
        Ok(())
    }

    fn read(&mut self, region: Region, offset: u32, buf: &mut [u8]) -> Result<usize, PowerCut> {
        let bytes = &self.regions[Self::index(region)];
        let from = (offset as usize).min(bytes.len());
        let n = buf.len().min(bytes.len() - from);
        buf[..n].copy_from_slice(&bytes[from..from + n]);
        Ok(n)
    }

    fn sync(&mut self) -> Result<(), PowerCut> {
        Ok(())
    }
}

pub(crate) fn head_update(version: u32, inputs: usize, classes: usize, int8: bool) -> HeadUpdate {
    let weights: Vec<f32> = (0..inputs * classes).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
    HeadUpdate {
        model_hash: MODEL,
        version,
        inputs: inputs as u16,
        classes: classes as u8,
        weights: if int8 {
            quantise_rows(&weights, inputs).unwrap()
        } else {
            HeadWeights::F32(heapless::Vec::from_slice(&weights).unwrap())
        },
        bias: heapless::Vec::from_slice(&std::vec![0.5; classes]).unwrap(),
        prototype_mean: heapless::Vec::from_slice(&std::vec![0.25; inputs]).unwrap(),
        prototype_var: heapless::Vec::from_slice(&std::vec![2.0; inputs]).unwrap(),
        alarm: crate::alarm::AlarmPolicy { threshold: 9.0, raise_k: 3, window_n: 5, clear_ratio: 0.7 },
    }
}

pub(crate) fn signing_key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

pub(crate) fn signed(update: &HeadUpdate, key: &SigningKey) -> (UpdateHeader, Vec<u8>, Signature) {
    let payload = postcard::to_allocvec(update).unwrap();
    let header = UpdateHeader::for_payload(UpdateKind::Head, update.model_hash, update.version, &payload);
    let (bytes, len) = header.signed_bytes();
    let signature = Signature(key.sign(&bytes[..len]).to_bytes());
    (header, payload, signature)
}

/// Pushes one update through the slots; the first error ends it.
fn apply(
    slots: &mut Slots<RamStorage>,
    header: &UpdateHeader,
    payload: &[u8],
    signature: Option<&Signature>,
    key: &[u8; 32],
    current: u32,
) -> Result<u32, NackReason> {
    slots.begin(header, &MODEL, current, MAX_VERSION_STEP)?;
    for (i, chunk) in payload.chunks(100).enumerate() {
        slots.chunk((i * 100) as u32, chunk)?;
    }
    let mut scratch = std::vec![0u8; 8192];
    slots
        .commit(signature, key, &mut scratch, |_, p| {
            let update: HeadUpdate = postcard::from_bytes(p).map_err(|_| NackReason::BadPayload)?;
            update.validate().map_err(|_| NackReason::BadPayload)
        })
        .map(|r| r.version)
}

fn active_payload(storage: RamStorage) -> Option<Vec<u8>> {
    let mut slots = Slots::open(storage).unwrap();
    let mut buf = std::vec![0u8; 8192];
    slots.read_active(&mut buf).unwrap().map(|p| p.to_vec())
}

#[test]
fn a_signed_newer_update_is_applied_and_survives_a_restart() {
    let key = signing_key(1);
    let public = key.verifying_key().to_bytes();
    let mut slots = Slots::open(RamStorage::default()).unwrap();
    let (header, payload, signature) = signed(&head_update(1, 16, 4, false), &key);
    assert_eq!(apply(&mut slots, &header, &payload, Some(&signature), &public, 0), Ok(1));
    let (header2, payload2, signature2) = signed(&head_update(2, 16, 4, true), &key);
    assert_eq!(apply(&mut slots, &header2, &payload2, Some(&signature2), &public, 1), Ok(2));
    let reopened = Slots::open(slots.into_storage()).unwrap();
    assert_eq!(
        reopened.active().map(|a| (a.slot, a.record.version, a.record.generation)),
        Some((Slot::B, 2, 2))
    );
    assert_eq!(active_payload(reopened.into_storage()), Some(payload2));
}

#[test]
fn refusals_name_their_reason_and_leave_the_active_head() {
    let key = signing_key(1);
    let public = key.verifying_key().to_bytes();
    let mut slots = Slots::open(RamStorage::default()).unwrap();
    let (header, payload, signature) = signed(&head_update(5, 16, 4, false), &key);
    assert_eq!(apply(&mut slots, &header, &payload, Some(&signature), &public, 0), Ok(5));

    let (h, p, _) = signed(&head_update(6, 16, 4, false), &key);
    assert_eq!(apply(&mut slots, &h, &p, None, &public, 5), Err(NackReason::Unsigned));
    let (h, p, s) = signed(&head_update(7, 16, 4, false), &signing_key(2));
    assert_eq!(apply(&mut slots, &h, &p, Some(&s), &public, 5), Err(NackReason::BadSignature));
    let (h, p, s) = signed(&head_update(4, 16, 4, false), &key);
    assert_eq!(apply(&mut slots, &h, &p, Some(&s), &public, 5), Err(NackReason::NotNewer { current: 5 }));
    // A signed version far above the active one would block every later update.
    for version in [5 + MAX_VERSION_STEP + 1, u32::MAX] {
        let (h, p, s) = signed(&head_update(version, 16, 4, false), &key);
        assert_eq!(
            apply(&mut slots, &h, &p, Some(&s), &public, 5),
            Err(NackReason::VersionJump { current: 5, max_step: MAX_VERSION_STEP })
        );
    }
    let mut other = head_update(8, 16, 4, false);
    other.model_hash = [1; 32];
    let (h, p, s) = signed(&other, &key);
    assert_eq!(apply(&mut slots, &h, &p, Some(&s), &public, 5), Err(NackReason::OtherModel));
    // A payload altered after signing: the hash no longer matches the signed header.
    let (h, mut p, s) = signed(&head_update(9, 16, 4, false), &key);
    p[40] ^= 1;
    assert_eq!(apply(&mut slots, &h, &p, Some(&s), &public, 5), Err(NackReason::HashMismatch));
    // A signed header whose payload is not a valid head.
    let junk = std::vec![7u8; 300];
    let h = UpdateHeader::for_payload(UpdateKind::Head, MODEL, 10, &junk);
    let (bytes, len) = h.signed_bytes();
    let s = Signature(key.sign(&bytes[..len]).to_bytes());
    assert_eq!(apply(&mut slots, &h, &junk, Some(&s), &public, 5), Err(NackReason::BadPayload));

    assert_eq!(slots.active().map(|a| a.record.version), Some(5));
    assert_eq!(active_payload(slots.into_storage()), Some(payload));
}

#[test]
fn the_largest_version_step_is_taken() {
    let key = signing_key(1);
    let public = key.verifying_key().to_bytes();
    let mut slots = Slots::open(RamStorage::default()).unwrap();
    let (h, p, s) = signed(&head_update(5 + MAX_VERSION_STEP, 16, 4, false), &key);
    assert_eq!(apply(&mut slots, &h, &p, Some(&s), &public, 5), Ok(5 + MAX_VERSION_STEP));
}

#[test]
fn chunks_out_of_order_are_refused_and_repeats_ignored() {
    let key = signing_key(1);
    let mut slots = Slots::open(RamStorage::default()).unwrap();
    let (header, payload, _) = signed(&head_update(1, 16, 4, false), &key);
    assert_eq!(slots.chunk(0, &payload[..10]), Err(NackReason::NoUpdate));
    assert_eq!(slots.begin(&header, &MODEL, 0, MAX_VERSION_STEP), Ok(0));
    assert_eq!(slots.chunk(0, &payload[..100]), Ok(100));
    assert_eq!(slots.chunk(0, &payload[..100]), Ok(100), "a repeated chunk is acknowledged");
    assert_eq!(slots.chunk(200, &payload[200..300]), Err(NackReason::Offset { expected: 100 }));
    // Begin again with the same header resumes where the device is.
    assert_eq!(slots.begin(&header, &MODEL, 0, MAX_VERSION_STEP), Ok(100));
    let too_long = std::vec![0u8; header.length as usize];
    assert_eq!(slots.chunk(100, &too_long[100..]), Ok(header.length));
    assert_eq!(slots.chunk(header.length, &[1]), Err(NackReason::Offset { expected: header.length }));
}

#[test]
fn a_power_cut_at_every_write_offset_leaves_exactly_the_old_or_the_new_head() {
    let key = signing_key(1);
    let public = key.verifying_key().to_bytes();
    let mut base = Slots::open(RamStorage::default()).unwrap();
    let (h1, p1, s1) = signed(&head_update(1, 32, 4, false), &key);
    apply(&mut base, &h1, &p1, Some(&s1), &public, 0).unwrap();
    let base = base.into_storage();
    let (h2, p2, s2) = signed(&head_update(2, 32, 4, true), &key);

    // The budget an uninterrupted apply spends.
    let mut unlimited = base.clone();
    unlimited.budget = Some(usize::MAX);
    let mut slots = Slots::open(unlimited).unwrap();
    apply(&mut slots, &h2, &p2, Some(&s2), &public, 1).unwrap();
    let total = usize::MAX - slots.into_storage().budget.unwrap();
    assert!(total > p2.len() + RECORD_LEN);

    let (mut old, mut new) = (0, 0);
    for cut in 0..=total {
        let mut storage = base.clone();
        storage.budget = Some(cut);
        let mut slots = Slots::open(storage).unwrap();
        let result = apply(&mut slots, &h2, &p2, Some(&s2), &public, 1);
        let mut after = slots.into_storage();
        after.budget = None;
        match active_payload(after) {
            Some(p) if p == p1 => old += 1,
            Some(p) if p == p2 => {
                new += 1;
                assert!(
                    result.is_ok() || cut >= total - 1,
                    "new head active although the apply failed at {cut}"
                );
            }
            other => panic!("power cut after {cut} bytes left {other:?}"),
        }
    }
    assert_eq!(old + new, total + 1);
    assert!(new >= 1 && old >= total - RECORD_LEN);
}

#[test]
fn a_64_by_4_int8_head_update_frames_in_under_1_5_kib() {
    let key = signing_key(1);
    let (header, payload, signature) = signed(&head_update(1, 64, 4, true), &key);
    let mut frame = [0u8; crate::wire::MAX_FRAME];
    let mut total = 0;
    let mut send = |m: crate::wire::Message<'_>| {
        total += crate::wire::encode_frame(&crate::wire::Envelope::new(100_000, m), &mut frame).unwrap();
    };
    send(crate::wire::Message::UpdateBegin(header));
    for (i, c) in payload.chunks(crate::wire::MAX_CHUNK).enumerate() {
        send(crate::wire::Message::UpdateChunk { offset: (i * crate::wire::MAX_CHUNK) as u32, data: c });
    }
    send(crate::wire::Message::UpdateCommit { signature: Some(signature) });
    assert!(total <= 1536, "{total} bytes framed");
}

#[test]
fn int8_weights_stay_within_half_a_step_of_f32() {
    let update = head_update(1, 64, 4, false);
    let HeadWeights::F32(w) = &update.weights else { unreachable!() };
    let q = quantise_rows(w, 64).unwrap();
    let quantised = HeadUpdate { weights: q, ..update.clone() };
    quantised.validate().unwrap();
    let mut out = std::vec![0.0; 256];
    quantised.weights_into(&mut out).unwrap();
    let HeadWeights::Int8 { scales, .. } = &quantised.weights else { unreachable!() };
    for (i, (a, b)) in w.iter().zip(&out).enumerate() {
        assert!((a - b).abs() <= scales[i / 64] / 2.0 + 1e-6);
    }
}

#[test]
fn invalid_heads_are_refused() {
    let mut update = head_update(1, 16, 4, false);
    update.bias[0] = f32::NAN;
    assert_eq!(update.validate(), Err(CoreError::NotFinite));
    let mut update = head_update(1, 16, 4, false);
    update.inputs = 15;
    assert!(update.validate().is_err());
    let mut update = head_update(1, 16, 4, false);
    update.prototype_var[3] = -1.0;
    assert!(update.validate().is_err());
}

#[test]
fn saved_device_state_is_committed_like_an_update_and_a_power_cut_keeps_the_old_one() {
    let model = [7u8; 32];
    let (first, second) = (std::vec![1u8; 300], std::vec![2u8; 500]);
    let mut scratch = std::vec![0u8; 1024];
    let mut slots = Slots::open(RamStorage::default()).unwrap();
    slots.save(&model, 1, &first, &mut scratch).unwrap();
    let base = slots.into_storage();
    assert_eq!(active_payload(base.clone()), Some(first.clone()));

    let mut unlimited = base.clone();
    unlimited.budget = Some(usize::MAX);
    let mut slots = Slots::open(unlimited).unwrap();
    let record = slots.save(&model, 1, &second, &mut scratch).unwrap();
    assert_eq!((record.generation, record.model_hash), (2, model));
    let total = usize::MAX - slots.into_storage().budget.unwrap();
    for cut in 0..total {
        let mut storage = base.clone();
        storage.budget = Some(cut);
        let mut slots = Slots::open(storage).unwrap();
        assert!(slots.save(&model, 1, &second, &mut scratch).is_err(), "saved with {cut} of {total} bytes");
        let mut after = slots.into_storage();
        after.budget = None;
        assert_eq!(active_payload(after), Some(first.clone()), "power cut after {cut} bytes");
    }
    let mut slots = Slots::open(base).unwrap();
    assert_eq!(slots.save(&model, 1, &second, &mut [0u8; 100]), Err(NackReason::TooLarge { capacity: 100 }));
}
