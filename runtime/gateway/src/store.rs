//! The durable report store: an append-only file of length-prefixed, CRC-checked records.
//!
//! File layout: the 8-byte magic `VIGILRS1`, then records, each
//! `u32 LE payload length | u32 LE CRC-32 (ISO-HDLC) of the payload | payload`, where the
//! payload is the postcard encoding of an [`AnomalyReport`]. A crash can leave a torn
//! last record; opening the store keeps every complete record and truncates the rest.

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Recovery {
    /// Complete records kept.
    pub records: usize,
    /// Bytes of a torn or corrupt tail that were cut off.
    pub truncated_bytes: u64,
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
}

impl ReportStore {
    /// Opens (or creates) the store in folder `dir`, recovering from a torn tail.
    pub fn open(dir: &Path, policy: FsyncPolicy) -> Result<Self> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RuntimeError::StoreIo { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
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
        let (reports, good_len, offsets) = scan(&bytes);
        let recovery = Recovery { records: reports.len(), truncated_bytes: (bytes.len() - good_len) as u64 };
        if recovery.truncated_bytes > 0 {
            file.set_len(good_len as u64).map_err(io(&path))?;
            file.sync_all().map_err(io(&path))?;
        }
        file.seek(SeekFrom::End(0)).map_err(io(&path))?;
        let next_sequence = reports.last().map_or(0, |r| r.sequence + 1);
        let index = reports.iter().map(|r| r.sequence).zip(offsets).collect();
        Ok(ReportStore {
            path,
            file,
            policy,
            unsynced: 0,
            next_sequence,
            recovery,
            index,
            len: good_len as u64,
        })
    }

    /// What opening found.
    pub fn recovery(&self) -> Recovery {
        self.recovery
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
        Ok(scan(&bytes).0)
    }
}

impl Drop for ReportStore {
    fn drop(&mut self) {
        if self.unsynced > 0 {
            let _ = self.file.sync_data();
        }
    }
}

/// Decodes records after the magic; returns them, the length of the valid prefix and the
/// offset of each record.
fn scan(bytes: &[u8]) -> (Vec<AnomalyReport>, usize, Vec<u64>) {
    let mut reports = Vec::new();
    let mut offsets = Vec::new();
    let mut at = MAGIC.len();
    while let Some(header) = bytes.get(at..at + 8) {
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len > MAX_RECORD {
            break;
        }
        let Some(payload) = bytes.get(at + 8..at + 8 + len) else {
            break;
        };
        if CRC.checksum(payload) != crc {
            break;
        }
        match postcard::from_bytes::<AnomalyReport>(payload) {
            Ok(r) => reports.push(r),
            Err(_) => break,
        }
        offsets.push(at as u64);
        at += 8 + len;
    }
    (reports, at, offsets)
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

    #[test]
    fn reports_survive_reopen_and_sequence_continues() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = ReportStore::open(dir.path(), FsyncPolicy::EveryRecord).unwrap();
            for i in 0..3 {
                s.append(&report(i)).unwrap();
            }
        }
        let s = ReportStore::open(dir.path(), FsyncPolicy::Never).unwrap();
        assert_eq!(s.recovery(), Recovery { records: 3, truncated_bytes: 0 });
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
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = ReportStore::open(dir.path(), FsyncPolicy::Never).unwrap();
            for i in 0..4 {
                s.append(&report(i)).unwrap();
            }
        }
        let path = dir.path().join(FILE_NAME);
        let full = std::fs::read(&path).unwrap();
        let (_, three_len, _) = scan(&full[..full.len() - 1]);
        assert!(three_len < full.len());
        for cut in three_len..full.len() {
            std::fs::write(&path, &full[..cut]).unwrap();
            let mut s = ReportStore::open(dir.path(), FsyncPolicy::Never).unwrap();
            assert_eq!(s.recovery().records, 3, "cut at byte {cut}");
            assert_eq!(s.recovery().truncated_bytes, (cut - three_len) as u64, "cut at byte {cut}");
            assert_eq!(std::fs::metadata(&path).unwrap().len(), three_len as u64);
            // Appending after recovery yields a valid store again.
            s.append(&report(3)).unwrap();
            drop(s);
            assert_eq!(ReportStore::read_all(dir.path()).unwrap().len(), 4, "cut at byte {cut}");
        }
    }

    #[test]
    fn a_flipped_byte_stops_the_scan_at_that_record() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = ReportStore::open(dir.path(), FsyncPolicy::Never).unwrap();
            for i in 0..3 {
                s.append(&report(i)).unwrap();
            }
        }
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
