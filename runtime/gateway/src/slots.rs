//! Update slots as files in a gateway's state folder.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use vigil_core::update::slots::{Region, Slot, SlotStorage};

/// Largest update payload a gateway stores (a 256 x 8 f32 head is about 10 KiB).
pub const GATEWAY_SLOT_CAPACITY: u32 = 64 * 1024;

/// The four regions of [`SlotStorage`] as files `slot-a.bin`, `slot-b.bin`,
/// `record-a.bin` and `record-b.bin`; `sync` fsyncs the files written and the folder.
///
/// A commit record is replaced atomically: written whole to a temporary file, fsynced, and
/// renamed over the old one, so a record file is always either absent or complete (its
/// CRC is a second line of defence, and the only one on flash).
#[derive(Debug)]
pub struct FileSlots {
    dir: PathBuf,
    capacity: u32,
    /// Regions written or erased since the last sync.
    dirty: Vec<Region>,
}

impl FileSlots {
    /// Slots in folder `dir`, created when missing.
    pub fn open(dir: &Path) -> io::Result<Self> {
        Self::with_capacity(dir, GATEWAY_SLOT_CAPACITY)
    }

    /// Slots of `capacity` bytes each in folder `dir`, created when missing.
    pub fn with_capacity(dir: &Path, capacity: u32) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(FileSlots { dir: dir.to_path_buf(), capacity, dirty: Vec::new() })
    }

    /// The file behind a region.
    pub fn path(&self, region: Region) -> PathBuf {
        self.dir.join(match region {
            Region::Slot(Slot::A) => "slot-a.bin",
            Region::Slot(Slot::B) => "slot-b.bin",
            Region::Record(Slot::A) => "record-a.bin",
            Region::Record(Slot::B) => "record-b.bin",
        })
    }

    fn mark(&mut self, region: Region) {
        if !self.dirty.contains(&region) {
            self.dirty.push(region);
        }
    }

    fn file(&self, region: Region) -> io::Result<File> {
        OpenOptions::new().read(true).write(true).create(true).truncate(false).open(self.path(region))
    }
}

impl SlotStorage for FileSlots {
    type Error = io::Error;

    fn slot_capacity(&self) -> u32 {
        self.capacity
    }

    fn erase(&mut self, region: Region) -> io::Result<()> {
        self.mark(region);
        match region {
            Region::Record(_) => match std::fs::remove_file(self.path(region)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
            Region::Slot(_) => self.file(region)?.set_len(0),
        }
    }

    fn write(&mut self, region: Region, offset: u32, data: &[u8]) -> io::Result<()> {
        self.mark(region);
        match region {
            Region::Record(_) if offset == 0 => {
                let path = self.path(region);
                let tmp = path.with_extension("tmp");
                let mut file = File::create(&tmp)?;
                io::Write::write_all(&mut file, data)?;
                file.sync_all()?;
                std::fs::rename(&tmp, &path)
            }
            _ => self.file(region)?.write_all_at(data, u64::from(offset)),
        }
    }

    fn read(&mut self, region: Region, offset: u32, buf: &mut [u8]) -> io::Result<usize> {
        let file = match File::open(self.path(region)) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut filled = 0;
        while filled < buf.len() {
            match file.read_at(&mut buf[filled..], u64::from(offset) + filled as u64)? {
                0 => break,
                n => filled += n,
            }
        }
        Ok(filled)
    }

    fn sync(&mut self) -> io::Result<()> {
        if self.dirty.is_empty() {
            return Ok(());
        }
        for region in &self.dirty {
            match File::open(self.path(*region)) {
                Ok(file) => file.sync_all()?,
                // An erased record has no file.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        // The folder too, so a newly created file's entry is durable.
        File::open(&self.dir)?.sync_all()?;
        self.dirty.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_core::update::slots::{Slots, RECORD_LEN};
    use vigil_core::update::{UpdateHeader, UpdateKind};
    use vigil_core::wire::{NackReason, Signature};

    /// File slots whose writes stop, mid-write, once a byte budget is spent: a power cut.
    struct CutAfter {
        inner: FileSlots,
        budget: usize,
    }

    impl SlotStorage for CutAfter {
        type Error = io::Error;

        fn slot_capacity(&self) -> u32 {
            self.inner.slot_capacity()
        }

        fn erase(&mut self, region: Region) -> io::Result<()> {
            if self.budget == 0 {
                return Err(io::Error::other("power cut"));
            }
            self.budget -= 1;
            self.inner.erase(region)
        }

        fn write(&mut self, region: Region, offset: u32, data: &[u8]) -> io::Result<()> {
            let n = data.len().min(self.budget);
            self.budget -= n;
            self.inner.write(region, offset, &data[..n])?;
            if n < data.len() {
                return Err(io::Error::other("power cut"));
            }
            Ok(())
        }

        fn read(&mut self, region: Region, offset: u32, buf: &mut [u8]) -> io::Result<usize> {
            self.inner.read(region, offset, buf)
        }

        fn sync(&mut self) -> io::Result<()> {
            self.inner.sync()
        }
    }

    fn payload(version: u8) -> Vec<u8> {
        (0..700u32).map(|i| (i as u8).wrapping_mul(version)).collect()
    }

    /// Applies `payload(version)` as a signed update through the real state machine.
    fn apply(storage: CutAfter, version: u8) -> (Result<(), NackReason>, CutAfter) {
        use ed25519_dalek::Signer;
        let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let bytes = payload(version);
        let header = UpdateHeader::for_payload(UpdateKind::Head, [1; 32], u32::from(version), &bytes);
        let (signed, len) = header.signed_bytes();
        let signature = Signature(key.sign(&signed[..len]).to_bytes());
        let mut slots = Slots::open(storage).unwrap();
        let mut scratch = vec![0u8; 4096];
        let result = (|| {
            slots.begin(&header, &[1; 32], u32::from(version) - 1, vigil_core::update::MAX_VERSION_STEP)?;
            for (i, chunk) in bytes.chunks(128).enumerate() {
                slots.chunk((i * 128) as u32, chunk)?;
            }
            slots.commit(Some(&signature), key.verifying_key().as_bytes(), &mut scratch, |_, _| Ok(()))?;
            Ok(())
        })();
        (result, slots.into_storage())
    }

    #[test]
    fn a_power_cut_at_every_byte_of_a_file_apply_keeps_the_old_payload_or_the_new() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base");
        let (result, _) = apply(CutAfter { inner: FileSlots::open(&base).unwrap(), budget: usize::MAX }, 1);
        result.unwrap();
        // Two erases, the payload, the commit record.
        let total = 2 + payload(2).len() + RECORD_LEN;
        let (mut old, mut new) = (0, 0);
        for cut in 0..=total {
            let case = dir.path().join(format!("cut-{cut}"));
            std::fs::create_dir(&case).unwrap();
            for name in ["slot-a.bin", "record-a.bin"] {
                std::fs::copy(base.join(name), case.join(name)).unwrap();
            }
            let (result, _) = apply(CutAfter { inner: FileSlots::open(&case).unwrap(), budget: cut }, 2);
            assert_eq!(result.is_ok(), cut >= total, "cut after {cut} bytes");
            // Restart: exactly one of the two payloads is active.
            let mut slots = Slots::open(FileSlots::open(&case).unwrap()).unwrap();
            let mut buf = vec![0u8; 4096];
            match slots.read_active(&mut buf).unwrap() {
                Some(p) if p == payload(1) => old += 1,
                Some(p) if p == payload(2) => new += 1,
                other => panic!("cut after {cut} bytes left {other:?}"),
            }
            std::fs::remove_dir_all(&case).unwrap();
        }
        assert_eq!((old, new), (total, 1));
    }
}
