//! The durable report store: an append-only file of length-prefixed, CRC-checked records.
//!
//! File layout: the 8-byte magic `VIGILRS1`, then records, each
//! `u32 LE payload length | u32 LE CRC-32 (ISO-HDLC) of the payload | payload`, where the
//! payload is the postcard encoding of an [`AnomalyReport`].
//!
//! What it guarantees (`docs/reliability.md`):
//!
//! - **No valid record is lost to a bad one.** Opening scans every record; past one that
//!   fails its length, CRC or decoding (a torn write, a flipped bit, a wild length field),
//!   it resynchronises at the next offset where a record checks out, so every intact
//!   record before and after is kept. The bad bytes are moved, with their offset, to
//!   `reports.quarantine` beside the store, named in one warning, and the store is
//!   rewritten without them (to a temporary file, synced, then renamed over).
//! - **Sequence numbers never repeat.** When bytes are quarantined, the next sequence
//!   number skips past as many records as those bytes could have held, and that
//!   high-water mark is kept in `reports.next`, so a host that saw a report now lost never
//!   sees its number again.
//! - **One writer at a time.** An open store holds an advisory lock on `reports.lock`,
//!   which names its process; a second writer gets an error naming that PID.

use crate::error::{Result, RuntimeError};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use vigil_core::report::AnomalyReport;

/// Magic bytes at the start of a store file.
pub const MAGIC: &[u8; 8] = b"VIGILRS2";
/// Magic of the first store format (reports without spectrum snapshots).
const MAGIC_V1: &[u8; 8] = b"VIGILRS1";
/// Largest payload accepted; anything longer is treated as corruption.
pub const MAX_RECORD: usize = 4096;
/// File name of the store inside a report folder.
pub const FILE_NAME: &str = "reports.vrs";
/// Where bytes that held no valid record are kept, beside the store.
pub const QUARANTINE_FILE: &str = "reports.quarantine";
/// The sequence high-water mark, beside the store.
pub const NEXT_FILE: &str = "reports.next";
/// The writer's lock, beside the store.
pub const LOCK_FILE: &str = "reports.lock";
/// Fewest bytes a record takes (header and the smallest report), to bound how many
/// records a run of bad bytes could have held.
const MIN_RECORD_BYTES: u64 = 8 + 48;

const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// When appended records are flushed to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fsync after every record: nothing acknowledged is ever lost.
    EveryRecord,
    /// fsync after every `n` records (and on drop).
    EveryN(u32),
    /// Leave flushing to the operating system.
    Never,
}

/// What opening a store found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recovery {
    /// Complete records kept.
    pub records: usize,
    /// Bytes that held no valid record (a torn tail, a corrupt record), moved to the
    /// quarantine file.
    pub quarantined_bytes: u64,
    /// Where each run of bad bytes began in the store file as it was found.
    pub bad_offsets: Vec<u64>,
}

/// An open report store.
#[derive(Debug)]
pub struct ReportStore {
    path: PathBuf,
    file: File,
    policy: FsyncPolicy,
    unsynced: u32,
    next_sequence: u64,
    recovery: Recovery,
    /// Sequence number and file offset of every record, in file order.
    index: Vec<(u64, u64)>,
    len: u64,
    /// Held for the store's lifetime: the advisory lock on `reports.lock`.
    _lock: File,
}

impl ReportStore {
    /// Opens (or creates) the store in folder `dir`, recovering every intact record (see
    /// the module docs); fails when another process holds the store.
    pub fn open(dir: &Path, policy: FsyncPolicy) -> Result<Self> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RuntimeError::StoreIo { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let lock = lock_store(dir)?;
        let path = dir.join(FILE_NAME);
        let mut file =
            OpenOptions::new().read(true).append(true).create(true).open(&path).map_err(io(&path))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io(&path))?;
        if bytes.is_empty() {
            file.write_all(MAGIC).map_err(io(&path))?;
            file.sync_all().map_err(io(&path))?;
            bytes.extend_from_slice(MAGIC);
        } else if bytes.starts_with(MAGIC_V1) {
            return Err(RuntimeError::StoreIo {
                path,
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "report store of an earlier format (VIGILRS1, reports without spectra); it is left \
                     untouched: pull its reports with the vigil version that wrote it, then move it away",
                ),
            });
        } else if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(RuntimeError::StoreIo {
                path,
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "not a Vigil report store (bad magic); move it away or pick another folder",
                ),
            });
        }
        let scanned = scan(&bytes);
        let quarantined_bytes: u64 = scanned.bad.iter().map(|&(from, to)| (to - from) as u64).sum();
        let recovery = Recovery {
            records: scanned.reports.len(),
            quarantined_bytes,
            bad_offsets: scanned.bad.iter().map(|&(from, _)| from as u64).collect(),
        };
        let mut high_water = read_high_water(dir);
        let mut len = bytes.len() as u64;
        let mut offsets = scanned.offsets.clone();
        if quarantined_bytes > 0 {
            quarantine(dir, &bytes, &scanned.bad).map_err(io(&dir.join(QUARANTINE_FILE)))?;
            // Sequence numbers the bad bytes may have held are never given out again.
            let seen = scanned.reports.iter().map(|r| r.sequence + 1).max().unwrap_or(0);
            high_water = high_water.max(seen + quarantined_bytes.div_ceil(MIN_RECORD_BYTES));
            write_high_water(dir, high_water).map_err(io(&dir.join(NEXT_FILE)))?;
            let (compacted, new_offsets) = compact(&bytes, &scanned.offsets);
            replace_file(&path, &compacted).map_err(io(&path))?;
            file = OpenOptions::new().read(true).append(true).open(&path).map_err(io(&path))?;
            len = compacted.len() as u64;
            offsets = new_offsets;
            log::warn!(
                "report store {}: {quarantined_bytes} byte(s) at offset(s) {} held no valid record; \
                 moved to {}, {} record(s) kept, next report #{high_water}",
                path.display(),
                recovery.bad_offsets.iter().map(u64::to_string).collect::<Vec<_>>().join(", "),
                dir.join(QUARANTINE_FILE).display(),
                recovery.records
            );
        }
        file.seek(SeekFrom::End(0)).map_err(io(&path))?;
        let seen = scanned.reports.iter().map(|r| r.sequence + 1).max().unwrap_or(0);
        let next_sequence = seen.max(high_water);
        let index = scanned.reports.iter().map(|r| r.sequence).zip(offsets).collect();
        Ok(ReportStore { path, file, policy, unsynced: 0, next_sequence, recovery, index, len, _lock: lock })
    }

    /// What opening found.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The sequence number the next report should carry.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// Appends one report.
    pub fn append(&mut self, report: &AnomalyReport) -> Result<()> {
        let payload = postcard::to_allocvec(report)?;
        let mut record = Vec::with_capacity(8 + payload.len());
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&CRC.checksum(&payload).to_le_bytes());
        record.extend_from_slice(&payload);
        let io = |source| RuntimeError::StoreIo { path: self.path.clone(), source };
        self.file.write_all(&record).map_err(io)?;
        self.index.push((report.sequence, self.len));
        self.len += record.len() as u64;
        self.unsynced += 1;
        let sync = match self.policy {
            FsyncPolicy::EveryRecord => true,
            FsyncPolicy::EveryN(n) => self.unsynced >= n.max(1),
            FsyncPolicy::Never => false,
        };
        if sync {
            self.sync()?;
        }
        self.next_sequence = self.next_sequence.max(report.sequence + 1);
        Ok(())
    }

    /// Number of reports stored.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the store holds no report.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Whether a report with sequence number `sequence` is stored.
    pub fn contains(&self, sequence: u64) -> bool {
        self.index.iter().any(|&(s, _)| s == sequence)
    }

    /// The stored report with the smallest sequence number at or after `since`.
    pub fn first_from(&self, since: u64) -> Result<Option<AnomalyReport>> {
        use std::os::unix::fs::FileExt;
        let Some(&(_, offset)) = self.index.iter().filter(|&&(s, _)| s >= since).min_by_key(|&&(s, _)| s)
        else {
            return Ok(None);
        };
        let io = |source| RuntimeError::StoreIo { path: self.path.clone(), source };
        let mut header = [0u8; 8];
        self.file.read_exact_at(&mut header, offset).map_err(io)?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let mut payload = vec![0u8; len.min(MAX_RECORD)];
        self.file.read_exact_at(&mut payload, offset + 8).map_err(io)?;
        Ok(Some(postcard::from_bytes(&payload)?))
    }

    /// Flushes appended records to stable storage.
    pub fn sync(&mut self) -> Result<()> {
        self.file.sync_data().map_err(|source| RuntimeError::StoreIo { path: self.path.clone(), source })?;
        self.unsynced = 0;
        Ok(())
    }

    /// Reads every complete record of the store in folder `dir` without modifying it.
    pub fn read_all(dir: &Path) -> Result<Vec<AnomalyReport>> {
        let path = dir.join(FILE_NAME);
        let bytes =
            std::fs::read(&path).map_err(|source| RuntimeError::StoreIo { path: path.clone(), source })?;
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(RuntimeError::StoreIo {
                path,
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not a Vigil report store"),
            });
        }
        Ok(scan(&bytes).reports)
    }
}

impl Drop for ReportStore {
    fn drop(&mut self) {
        if self.unsynced > 0 {
            let _ = self.file.sync_data();
        }
    }
}

/// What [`scan`] found.
struct Scan {
    reports: Vec<AnomalyReport>,
    /// File offset of each report's record.
    offsets: Vec<u64>,
    /// Byte ranges that held no valid record.
    bad: Vec<(usize, usize)>,
}

/// The record at `at`, with its length, when it checks out (length, CRC, decoding).
fn record_at(bytes: &[u8], at: usize) -> Option<(AnomalyReport, usize)> {
    let header = bytes.get(at..at + 8)?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len > MAX_RECORD {
        return None;
    }
    let payload = bytes.get(at + 8..at + 8 + len)?;
    if CRC.checksum(payload) != crc {
        return None;
    }
    postcard::from_bytes::<AnomalyReport>(payload).ok().map(|r| (r, 8 + len))
}

/// Decodes the records after the magic, resynchronising past bad bytes at the next offset
/// where a record checks out.
fn scan(bytes: &[u8]) -> Scan {
    let mut out = Scan { reports: Vec::new(), offsets: Vec::new(), bad: Vec::new() };
    let mut at = MAGIC.len();
    while at < bytes.len() {
        if let Some((report, len)) = record_at(bytes, at) {
            out.reports.push(report);
            out.offsets.push(at as u64);
            at += len;
            continue;
        }
        let next = (at + 1..bytes.len()).find(|&k| record_at(bytes, k).is_some()).unwrap_or(bytes.len());
        out.bad.push((at, next));
        at = next;
    }
    out
}

/// The store rebuilt from the magic and the records at `offsets`, and their new offsets.
fn compact(bytes: &[u8], offsets: &[u64]) -> (Vec<u8>, Vec<u64>) {
    let mut out = MAGIC.to_vec();
    let mut new_offsets = Vec::with_capacity(offsets.len());
    for &at in offsets {
        let at = at as usize;
        let len = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
        new_offsets.push(out.len() as u64);
        out.extend_from_slice(&bytes[at..at + 8 + len]);
    }
    (out, new_offsets)
}

/// Appends each bad range to the quarantine file: `u64 LE offset, u64 LE length, bytes`.
fn quarantine(dir: &Path, bytes: &[u8], bad: &[(usize, usize)]) -> std::io::Result<()> {
    let mut file = OpenOptions::new().create(true).append(true).open(dir.join(QUARANTINE_FILE))?;
    for &(from, to) in bad {
        file.write_all(&(from as u64).to_le_bytes())?;
        file.write_all(&((to - from) as u64).to_le_bytes())?;
        file.write_all(&bytes[from..to])?;
    }
    file.sync_all()
}

/// Writes `bytes` to `path` through a synced temporary file renamed over it.
fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("vrs.tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The persisted high-water mark (0 when there is none or it does not check out).
fn read_high_water(dir: &Path) -> u64 {
    let Ok(bytes) = std::fs::read(dir.join(NEXT_FILE)) else { return 0 };
    match bytes.as_slice() {
        [v @ .., c0, c1, c2, c3]
            if v.len() == 8 && CRC.checksum(v) == u32::from_le_bytes([*c0, *c1, *c2, *c3]) =>
        {
            u64::from_le_bytes(v.try_into().unwrap_or([0; 8]))
        }
        _ => 0,
    }
}

/// Persists the high-water mark: `u64 LE` and its CRC-32.
fn write_high_water(dir: &Path, next: u64) -> std::io::Result<()> {
    let value = next.to_le_bytes();
    replace_file(&dir.join(NEXT_FILE), &[value.as_slice(), &CRC.checksum(&value).to_le_bytes()].concat())
}

/// Takes the store's advisory lock and writes this process's PID into the lock file; an
/// error names the PID of the process that holds it.
fn lock_store(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let io = |source| RuntimeError::StoreIo { path: path.clone(), source };
    let mut file =
        OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
    match file.try_lock() {
        Ok(()) => {
            file.set_len(0).map_err(io)?;
            file.write_all(format!("{}\n", std::process::id()).as_bytes()).map_err(io)?;
            Ok(file)
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let who =
                if holder.is_empty() { "another process".to_string() } else { format!("process {holder}") };
            Err(RuntimeError::StoreIo {
                path: dir.join(FILE_NAME),
                source: std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    format!(
                        "the report store is in use by {who} (a running `vigil serve` or `vigil run`); \
                         one writer at a time: stop it or pick another folder"
                    ),
                ),
            })
        }
        Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_core::report::ReportKind;

    fn report(sequence: u64) -> AnomalyReport {
        AnomalyReport {
            sequence,
            kind: ReportKind::AlarmRaised,
            stream_time_s: sequence as f64 * 0.5,
            score: 7.5,
            threshold: 3.0,
            class_index: 1,
            probabilities: vigil_core::heapless::Vec::from_slice(&[0.1, 0.7, 0.1, 0.1]).unwrap(),
            model_hash: [7; 32],
            head_version: 1,
            top_bands: vigil_core::heapless::Vec::new(),
            spectrum: None,
        }
    }

    /// A folder with a store of reports `0..n`, closed.
    fn store_of(n: u64) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ReportStore::open(dir.path(), FsyncPolicy::EveryRecord).unwrap();
        for i in 0..n {
            s.append(&report(i)).unwrap();
        }
        dir
    }

    #[test]
    fn reports_survive_reopen_and_sequence_continues() {
        let dir = store_of(3);
        let s = ReportStore::open(dir.path(), FsyncPolicy::Never).unwrap();
        assert_eq!(s.recovery(), &Recovery { records: 3, quarantined_bytes: 0, bad_offsets: vec![] });
        assert_eq!(s.next_sequence(), 3);
        assert_eq!(ReportStore::read_all(dir.path()).unwrap(), vec![report(0), report(1), report(2)]);
        assert_eq!(s.first_from(1).unwrap(), Some(report(1)));
        assert_eq!(s.first_from(3).unwrap(), None);
    }

    #[test]
    fn reports_appended_after_open_are_found_by_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ReportStore::open(dir.path(), FsyncPolicy::Never).unwrap();
        for i in [0, 1, 5, 6] {
            s.append(&report(i)).unwrap();
        }
        assert_eq!(s.len(), 4);
        assert!(s.contains(5) && !s.contains(3));
        assert_eq!(s.first_from(2).unwrap(), Some(report(5)));
        assert_eq!(s.first_from(7).unwrap(), None);
    }

    #[test]
    fn truncating_the_last_record_at_every_byte_keeps_all_complete_records() {
        let dir = store_of(4);
        let path = dir.path().join(FILE_NAME);
        let full = std::fs::read(&path).unwrap();
        let three_len = scan(&full).offsets[3] as usize;
        assert!(three_len < full.len());
        for cut in three_len..full.len() {
            std::fs::write(&path, &full[..cut]).unwrap();
            let _ = std::fs::remove_file(dir.path().join(NEXT_FILE));
            let mut s = ReportStore::open(dir.path(), FsyncPolicy::Never).unwrap();
            assert_eq!(s.recovery().records, 3, "cut at byte {cut}");
            assert_eq!(s.recovery().quarantined_bytes, (cut - three_len) as u64, "cut at byte {cut}");
            assert_eq!(std::fs::metadata(&path).unwrap().len(), three_len as u64);
            // The torn record's number is never reused.
            assert!(s.next_sequence() >= 4 || cut == three_len, "cut at byte {cut}");
            // Appending after recovery yields a valid store again.
            let next = s.next_sequence();
            s.append(&report(next)).unwrap();
            drop(s);
            assert_eq!(ReportStore::read_all(dir.path()).unwrap().len(), 4, "cut at byte {cut}");
        }
    }

    /// The campaign's finding: one flipped byte in the first of three records, or a wild
    /// length field, used to truncate the store to its header and number the next alarm
    /// #0 again.
    #[test]
    fn a_byte_flipped_anywhere_loses_at_most_its_own_record_and_no_number_repeats() {
        let dir = store_of(3);
        let path = dir.path().join(FILE_NAME);
        let good = std::fs::read(&path).unwrap();
        let offsets = scan(&good).offsets;
        let record_of = |at: usize| offsets.iter().rposition(|&o| o as usize <= at).unwrap();
        for at in MAGIC.len()..good.len() {
            for corrupt in [0xffu8, 0x01] {
                let mut bytes = good.clone();
                bytes[at] ^= corrupt;
                std::fs::write(&path, &bytes).unwrap();
                let _ = std::fs::remove_file(dir.path().join(NEXT_FILE));
                let s = ReportStore::open(dir.path(), FsyncPolicy::Never).unwrap();
                let kept: Vec<u64> =
                    ReportStore::read_all(dir.path()).unwrap().iter().map(|r| r.sequence).collect();
                let hit = record_of(at) as u64;
                let want: Vec<u64> = (0..3).filter(|&i| i != hit).collect();
                assert_eq!(kept, want, "byte {at} ^ {corrupt:#x}");
                assert!(s.next_sequence() >= 3, "byte {at}: next {}", s.next_sequence());
                assert!(s.recovery().quarantined_bytes > 0);
            }
        }
        // A length field set to 0xfffffff0 in the first record.
        let mut bytes = good.clone();
        bytes[MAGIC.len()..MAGIC.len() + 4].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let s = ReportStore::open(dir.path(), FsyncPolicy::Never).unwrap();
        assert_eq!(s.len(), 2);
        let next = s.next_sequence();
        assert!(next >= 3, "{next}");
        drop(s);
        // The high-water mark outlives the quarantine: reopening does not give #0..#2 again.
        let s = ReportStore::open(dir.path(), FsyncPolicy::Never).unwrap();
        assert_eq!(s.next_sequence(), next);
        assert!(dir.path().join(QUARANTINE_FILE).metadata().unwrap().len() > 0);
    }

    #[test]
    fn a_second_writer_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let first = ReportStore::open(dir.path(), FsyncPolicy::Never).unwrap();
        let e = ReportStore::open(dir.path(), FsyncPolicy::Never).unwrap_err().to_string();
        assert!(e.contains(&format!("in use by process {}", std::process::id())), "{e}");
        drop(first);
        assert!(ReportStore::open(dir.path(), FsyncPolicy::Never).is_ok());
    }

    #[test]
    fn a_flipped_byte_in_the_last_record_loses_only_that_record() {
        let dir = store_of(3);
        let path = dir.path().join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(ReportStore::read_all(dir.path()).unwrap().len(), 2);
    }

    #[test]
    fn a_foreign_file_is_refused_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, b"precious data").unwrap();
        let e = ReportStore::open(dir.path(), FsyncPolicy::Never).unwrap_err();
        assert!(e.to_string().contains("bad magic"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"precious data");
    }

    #[test]
    fn a_store_of_the_earlier_format_is_refused_not_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let old = [MAGIC_V1.as_slice(), &[4, 0, 0, 0, 1, 2, 3, 4, 9, 9, 9, 9]].concat();
        std::fs::write(&path, &old).unwrap();
        let e = ReportStore::open(dir.path(), FsyncPolicy::Never).unwrap_err();
        assert!(e.to_string().contains("earlier format"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), old);
    }
}
