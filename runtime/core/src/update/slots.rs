//! A/B update slots with a commit record written last.
//!
//! Storage holds two payload slots and one commit record per slot. An update is written
//! into the slot that is not active, after that slot's record has been erased; only when
//! the whole payload is written, read back and verified is the slot's record written,
//! with a generation one above the active one. At start the device takes the valid record
//! (magic, CRC, and a slot whose bytes hash to the recorded SHA-256) with the highest
//! generation. A power cut at any point therefore leaves either the old head or the new
//! one active, never a mixture: the active slot is never written, and the new slot counts
//! only once its record is complete.

use super::{UpdateHeader, UpdateKind};
use crate::wire::{crc32, NackReason, Signature, UpdateProgress, MAX_CHUNK};
use sha2::{Digest, Sha256};

/// Length of an encoded [`CommitRecord`].
pub const RECORD_LEN: usize = 84;
const RECORD_MAGIC: [u8; 4] = *b"VGC1";

/// One of the two slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Slot {
    /// The first slot.
    A,
    /// The second slot.
    B,
}

impl Slot {
    /// The other slot.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }
}

/// A region of update storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Region {
    /// The payload bytes of a slot.
    Slot(Slot),
    /// The commit record of a slot ([`RECORD_LEN`] bytes).
    Record(Slot),
}

/// Where a device keeps its update slots: files on a gateway, flash pages on a
/// microcontroller.
pub trait SlotStorage {
    /// What can go wrong.
    type Error: core::fmt::Debug;
    /// Bytes one slot holds.
    fn slot_capacity(&self) -> u32;
    /// Empties a region (a file truncated, flash pages erased).
    fn erase(&mut self, region: Region) -> Result<(), Self::Error>;
    /// Writes `data` at `offset` of a region.
    fn write(&mut self, region: Region, offset: u32, data: &[u8]) -> Result<(), Self::Error>;
    /// Reads from `offset` of a region into `buf`; returns the bytes read, fewer than
    /// `buf.len()` only past the end of what the region holds.
    fn read(&mut self, region: Region, offset: u32, buf: &mut [u8]) -> Result<usize, Self::Error>;
    /// Makes every write so far durable.
    fn sync(&mut self) -> Result<(), Self::Error>;
}

/// The record that makes a slot's payload the active update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct CommitRecord {
    /// Increases by one with every commit; the highest valid generation is active.
    pub generation: u32,
    /// Version of the update.
    pub version: u32,
    /// Payload length.
    pub length: u32,
    /// SHA-256 of the payload.
    pub sha256: [u8; 32],
    /// Model the update applies to.
    pub model_hash: [u8; 32],
}

impl CommitRecord {
    /// Fixed little-endian layout: magic `VGC1`, generation, version, length, SHA-256,
    /// model hash, then the CRC-32 of everything before it.
    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let mut out = [0u8; RECORD_LEN];
        out[0..4].copy_from_slice(&RECORD_MAGIC);
        out[4..8].copy_from_slice(&self.generation.to_le_bytes());
        out[8..12].copy_from_slice(&self.version.to_le_bytes());
        out[12..16].copy_from_slice(&self.length.to_le_bytes());
        out[16..48].copy_from_slice(&self.sha256);
        out[48..80].copy_from_slice(&self.model_hash);
        let crc = crc32(&out[..80]);
        out[80..84].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes a record; `None` when the magic or the CRC is wrong (erased or torn).
    pub fn decode(bytes: &[u8; RECORD_LEN]) -> Option<Self> {
        let word = |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        if bytes[0..4] != RECORD_MAGIC || crc32(&bytes[..80]) != word(80) {
            return None;
        }
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(&bytes[16..48]);
        let mut model_hash = [0u8; 32];
        model_hash.copy_from_slice(&bytes[48..80]);
        Some(CommitRecord { generation: word(4), version: word(8), length: word(12), sha256, model_hash })
    }
}

/// The active slot and its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ActiveSlot {
    /// Which slot.
    pub slot: Slot,
    /// Its commit record.
    pub record: CommitRecord,
}

#[derive(Debug, Clone)]
struct Receiving {
    header: UpdateHeader,
    slot: Slot,
    received: u32,
    hasher: Sha256,
}

/// The update state machine over a [`SlotStorage`].
#[derive(Debug)]
pub struct Slots<S: SlotStorage> {
    storage: S,
    active: Option<ActiveSlot>,
    receiving: Option<Receiving>,
    damaged: u8,
}

impl<S: SlotStorage> Slots<S> {
    /// Opens the storage and finds the active slot, if any.
    pub fn open(mut storage: S) -> Result<Self, S::Error> {
        let mut active: Option<ActiveSlot> = None;
        let mut damaged = 0;
        for slot in [Slot::A, Slot::B] {
            let mut bytes = [0u8; RECORD_LEN];
            let read = storage.read(Region::Record(slot), 0, &mut bytes)?;
            if read == 0 || bytes.iter().all(|&b| b == 0xFF) {
                continue; // never written, or erased
            }
            let record = CommitRecord::decode(&bytes).filter(|r| r.length <= storage.slot_capacity());
            let intact = match record {
                Some(r) if read == RECORD_LEN => {
                    hash_region(&mut storage, Region::Slot(slot), r.length)? == Some(r.sha256)
                }
                _ => false,
            };
            match record {
                Some(record) if intact => {
                    if active.is_none_or(|a| record.generation > a.record.generation) {
                        active = Some(ActiveSlot { slot, record });
                    }
                }
                _ => damaged += 1,
            }
        }
        Ok(Slots { storage, active, receiving: None, damaged })
    }

    /// Records found at open that were written but are not usable: torn by a power cut,
    /// or their slot no longer matches their hash. With an active slot, the device fell
    /// back to the older copy; without one, everything stored was lost.
    pub fn damaged_records(&self) -> u8 {
        self.damaged
    }

    /// The active slot, `None` while the device runs the head it shipped with.
    pub fn active(&self) -> Option<&ActiveSlot> {
        self.active.as_ref()
    }

    /// Bytes one slot holds.
    pub fn capacity(&self) -> u32 {
        self.storage.slot_capacity()
    }

    /// The storage, for inspection.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// Gives the storage back.
    pub fn into_storage(self) -> S {
        self.storage
    }

    /// How far the update in progress has come.
    pub fn progress(&self) -> Option<UpdateProgress> {
        self.receiving.as_ref().map(|r| UpdateProgress {
            version: r.header.version,
            received: r.received,
            total: r.header.length,
        })
    }

    /// Reads the active payload into `buf`; `Ok(None)` when no slot is active.
    pub fn read_active<'b>(&mut self, buf: &'b mut [u8]) -> Result<Option<&'b [u8]>, S::Error> {
        let Some(active) = self.active else { return Ok(None) };
        let len = active.record.length as usize;
        let Some(dest) = buf.get_mut(..len) else { return Ok(None) };
        let read = self.storage.read(Region::Slot(active.slot), 0, dest)?;
        Ok(if read == len { Some(&buf[..len]) } else { None })
    }

    /// Starts an update for a device running `model_hash` at head version `current`, or
    /// resumes the one in progress when `header` is the same. The version must rise, by
    /// at most `max_step` ([`super::MAX_VERSION_STEP`] unless the device says otherwise).
    /// Returns the offset of the first byte still needed.
    pub fn begin(
        &mut self,
        header: &UpdateHeader,
        model_hash: &[u8; 32],
        current: u32,
        max_step: u32,
    ) -> Result<u32, NackReason> {
        if let Some(r) = &self.receiving {
            if r.header == *header {
                return Ok(r.received);
            }
        }
        if header.model_hash != *model_hash {
            return Err(NackReason::OtherModel);
        }
        let active = self.active.map(|a| a.record);
        if active.is_some_and(|r| (r.version, r.sha256) == (header.version, header.sha256)) {
            return Err(NackReason::AlreadyActive { version: header.version });
        }
        if header.version <= current {
            return Err(NackReason::NotNewer { current });
        }
        if header.version - current > max_step {
            return Err(NackReason::VersionJump { current, max_step });
        }
        let capacity = self.storage.slot_capacity();
        if header.length > capacity {
            return Err(NackReason::TooLarge { capacity });
        }
        self.receiving = None;
        let slot = self.erase_inactive()?;
        self.receiving = Some(Receiving { header: *header, slot, received: 0, hasher: Sha256::new() });
        Ok(0)
    }

    /// Erases the slot that is not active, its record first so that a half-erased slot
    /// can never look committed, and returns it.
    fn erase_inactive(&mut self) -> Result<Slot, NackReason> {
        let slot = self.active.map_or(Slot::A, |a| a.slot.other());
        self.storage.erase(Region::Record(slot)).map_err(|_| NackReason::Storage)?;
        self.storage.sync().map_err(|_| NackReason::Storage)?;
        self.storage.erase(Region::Slot(slot)).map_err(|_| NackReason::Storage)?;
        Ok(slot)
    }

    /// Stores `payload`, which the device produced itself (its adapted state, say), with
    /// the same A/B discipline as a received update: written into the inactive slot,
    /// read back and hashed, then committed by its record. It carries no signature: it
    /// never crossed a link. An update in progress is abandoned.
    pub fn save(
        &mut self,
        model_hash: &[u8; 32],
        version: u32,
        payload: &[u8],
        scratch: &mut [u8],
    ) -> Result<CommitRecord, NackReason> {
        let capacity = self.storage.slot_capacity().min(scratch.len() as u32);
        if payload.len() as u64 > u64::from(capacity) {
            return Err(NackReason::TooLarge { capacity });
        }
        self.receiving = None;
        let slot = self.erase_inactive()?;
        self.storage.write(Region::Slot(slot), 0, payload).map_err(|_| NackReason::Storage)?;
        let header = UpdateHeader::for_payload(UpdateKind::Head, *model_hash, version, payload);
        self.read_back(slot, &header, scratch)?;
        self.write_record(slot, &header)
    }

    /// Reads a written slot back into `scratch` and checks it against `header`'s hash;
    /// returns the payload length.
    fn read_back(
        &mut self,
        slot: Slot,
        header: &UpdateHeader,
        scratch: &mut [u8],
    ) -> Result<usize, NackReason> {
        let len = header.length as usize;
        let capacity = scratch.len() as u32;
        let payload = scratch.get_mut(..len).ok_or(NackReason::TooLarge { capacity })?;
        let read = self.storage.read(Region::Slot(slot), 0, payload).map_err(|_| NackReason::Storage)?;
        if read != len || <[u8; 32]>::from(Sha256::digest(&*payload)) != header.sha256 {
            return Err(NackReason::Storage);
        }
        Ok(len)
    }

    /// Writes the commit record that makes `slot`, holding `header`'s payload, active.
    fn write_record(&mut self, slot: Slot, header: &UpdateHeader) -> Result<CommitRecord, NackReason> {
        let record = CommitRecord {
            generation: self.active.map_or(1, |a| a.record.generation.wrapping_add(1)),
            version: header.version,
            length: header.length,
            sha256: header.sha256,
            model_hash: header.model_hash,
        };
        self.storage.sync().map_err(|_| NackReason::Storage)?;
        self.storage.write(Region::Record(slot), 0, &record.encode()).map_err(|_| NackReason::Storage)?;
        self.storage.sync().map_err(|_| NackReason::Storage)?;
        self.active = Some(ActiveSlot { slot, record });
        Ok(record)
    }

    /// Stores `data` at `offset`. Returns the offset of the next byte needed. A chunk the
    /// device already holds (a retry after a lost answer) is accepted and ignored.
    pub fn chunk(&mut self, offset: u32, data: &[u8]) -> Result<u32, NackReason> {
        let r = self.receiving.as_mut().ok_or(NackReason::NoUpdate)?;
        let end = offset as u64 + data.len() as u64;
        if data.len() > MAX_CHUNK || end > r.header.length as u64 {
            return Err(NackReason::Offset { expected: r.received });
        }
        if offset == r.received {
            self.storage.write(Region::Slot(r.slot), offset, data).map_err(|_| NackReason::Storage)?;
            r.hasher.update(data);
            r.received = end as u32;
        } else if end > r.received as u64 {
            return Err(NackReason::Offset { expected: r.received });
        }
        Ok(r.received)
    }

    /// Commits the update in progress: checks completeness, the hash, the signature with
    /// `public_key`, reads the payload back into `scratch` and hands it with its signed
    /// header to `check`, then writes the commit record. On success the new slot is active.
    pub fn commit(
        &mut self,
        signature: Option<&Signature>,
        public_key: &[u8; 32],
        scratch: &mut [u8],
        check: impl FnOnce(&UpdateHeader, &[u8]) -> Result<(), NackReason>,
    ) -> Result<CommitRecord, NackReason> {
        let r = self.receiving.as_ref().ok_or(NackReason::NoUpdate)?;
        let header = r.header;
        if r.received < header.length {
            return Err(NackReason::Incomplete { received: r.received, total: header.length });
        }
        if <[u8; 32]>::from(r.hasher.clone().finalize()) != header.sha256 {
            self.receiving = None;
            return Err(NackReason::HashMismatch);
        }
        header.verify(signature, public_key)?;
        let slot = r.slot;
        let len = match self.read_back(slot, &header, scratch) {
            Ok(len) => len,
            Err(e) => {
                self.receiving = None;
                return Err(e);
            }
        };
        check(&header, &scratch[..len])?;
        let record = self.write_record(slot, &header)?;
        self.receiving = None;
        Ok(record)
    }
}

/// SHA-256 of the first `length` bytes of a region; `None` when it holds fewer.
fn hash_region<S: SlotStorage>(
    storage: &mut S,
    region: Region,
    length: u32,
) -> Result<Option<[u8; 32]>, S::Error> {
    let mut hasher = Sha256::new();
    let mut buf = [0u8; 256];
    let mut offset = 0u32;
    while offset < length {
        let want = ((length - offset) as usize).min(buf.len());
        let got = storage.read(region, offset, &mut buf[..want])?;
        if got < want {
            return Ok(None);
        }
        hasher.update(&buf[..want]);
        offset += want as u32;
    }
    Ok(Some(hasher.finalize().into()))
}
