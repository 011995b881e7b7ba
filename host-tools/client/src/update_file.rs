//! `.vup` files: a head update as `vigil export-head` writes it and `vigil sign` signs it.
//!
//! Layout (see docs/wire-format.md): `VIGILUP1`, u32 LE length + postcard `UpdateHeader`,
//! u32 LE length + payload, then `0` (unsigned) or `1` + the 64-byte Ed25519 signature.

use crate::{ClientError, Result};
use ed25519_dalek::{Signer, SigningKey};
use std::path::Path;
use vigil_core::adapt::{AdaptationStats, HeadSnapshot};
use vigil_core::update::{HeadUpdate, UpdateHeader, UpdateKind};
use vigil_core::wire::Signature;

const MAGIC: &[u8; 8] = b"VIGILUP1";

/// An update with its header and, once signed, its signature.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateFile {
    /// What the payload is, for which model, which version, its length and hash.
    pub header: UpdateHeader,
    /// The serialised [`HeadUpdate`].
    pub payload: Vec<u8>,
    /// The publisher's signature over the header, if signed.
    pub signature: Option<Signature>,
}

impl UpdateFile {
    /// An unsigned update carrying `head`.
    pub fn for_head(head: &HeadUpdate) -> Result<Self> {
        let payload =
            postcard::to_allocvec(head).map_err(ClientError::invalid("cannot serialise the head"))?;
        let header = UpdateHeader::for_payload(UpdateKind::Head, head.model_hash, head.version, &payload);
        Ok(UpdateFile { header, payload, signature: None })
    }

    /// An unsigned update carrying a device's head snapshot as the device sent it: a
    /// [`HeadUpdate`] followed by the device's [`AdaptationStats`] (devices without
    /// adaptation send the head alone).
    pub fn for_snapshot(bytes: Vec<u8>) -> Result<Self> {
        let head = HeadSnapshot::decode(&bytes)
            .map_err(ClientError::invalid("the device's snapshot is not a head update"))?
            .head;
        let header = UpdateHeader::for_payload(UpdateKind::Head, head.model_hash, head.version, &bytes);
        Ok(UpdateFile { header, payload: bytes, signature: None })
    }

    /// What the device's adaptation learned from, when the payload is a snapshot that
    /// carries it; zero counts otherwise.
    pub fn stats(&self) -> Result<AdaptationStats> {
        Ok(HeadSnapshot::decode(&self.payload)
            .map_err(ClientError::invalid("the payload is not a head update with its adaptation counts"))?
            .stats)
    }

    /// Signs the header with `key`.
    pub fn sign(&mut self, key: &SigningKey) {
        let (bytes, len) = self.header.signed_bytes();
        self.signature = Some(Signature(key.sign(&bytes[..len]).to_bytes()));
    }

    /// The head the payload carries.
    pub fn head(&self) -> Result<HeadUpdate> {
        postcard::from_bytes(&self.payload).map_err(ClientError::invalid("the payload is not a head update"))
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let header = postcard::to_allocvec(&self.header)?;
        let mut out = Vec::with_capacity(8 + 4 + header.len() + 4 + self.payload.len() + 65);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&(self.payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.payload);
        match &self.signature {
            None => out.push(0),
            Some(s) => {
                out.push(1);
                out.extend_from_slice(&s.0);
            }
        }
        Ok(out)
    }

    /// Parses a file's bytes; errors name the byte offset.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut at = 0;
        let mut take = |n: usize, what: &str| -> Result<&[u8]> {
            let Some(part) = bytes.get(at..at + n) else {
                return Err(ClientError::Invalid(format!(
                    "truncated at byte {at}: expected {n} bytes of {what}, the file has {}",
                    bytes.len()
                )));
            };
            at += n;
            Ok(part)
        };
        if take(8, "magic")? != MAGIC {
            return Err(ClientError::Invalid(
                "not a Vigil update file (no VIGILUP1 magic at byte 0); make one with `vigil export-head`"
                    .into(),
            ));
        }
        let len = u32::from_le_bytes(
            take(4, "header length")?.try_into().map_err(ClientError::invalid("header length"))?,
        ) as usize;
        let header: UpdateHeader =
            postcard::from_bytes(take(len, "header")?).map_err(ClientError::invalid("header at byte 12"))?;
        let len = u32::from_le_bytes(
            take(4, "payload length")?.try_into().map_err(ClientError::invalid("payload length"))?,
        ) as usize;
        let payload = take(len, "payload")?.to_vec();
        let signature = match take(1, "signature flag")?[0] {
            0 => None,
            1 => {
                Some(Signature(take(64, "signature")?.try_into().map_err(ClientError::invalid("signature"))?))
            }
            other => return Err(ClientError::Invalid(format!("signature flag is {other}, expected 0 or 1"))),
        };
        if header.length as usize != payload.len() {
            return Err(ClientError::Invalid(format!(
                "header says {} payload bytes, the file holds {}",
                header.length,
                payload.len()
            )));
        }
        Ok(UpdateFile { header, payload, signature })
    }

    /// Reads a `.vup` file.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path)
            .map_err(|e| ClientError::file(format!("cannot read update {}", path.display()), e))?;
        Self::from_bytes(&bytes).map_err(|e| e.context(format!("update {}", path.display())))
    }

    /// Writes a `.vup` file.
    pub fn write(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_bytes()?)
            .map_err(|e| ClientError::file(format!("cannot write update {}", path.display()), e))
    }
}

/// Reads an Ed25519 key file: 64 hex digits (32 bytes) on the first line.
pub fn read_key_hex(path: &Path) -> Result<[u8; 32]> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ClientError::file(format!("cannot read key {}", path.display()), e))?;
    match vigil_core::hex::decode_32(text.trim()) {
        Some(key) => Ok(key),
        None => Err(ClientError::Invalid(format!(
            "key {} must hold 64 hex digits (made by `vigil keygen`)",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_names_the_byte_offset() {
        let model = vigil_runtime::builtin::load_model(None).unwrap();
        let mut file = UpdateFile::for_head(&model.head_update(2, true).unwrap()).unwrap();
        file.sign(&SigningKey::from_bytes(&[3; 32]));
        let bytes = file.to_bytes().unwrap();
        assert_eq!(UpdateFile::from_bytes(&bytes).unwrap(), file);
        let e = UpdateFile::from_bytes(&bytes[..bytes.len() - 10]).unwrap_err();
        assert!(format!("{e:#}").contains("truncated at byte"), "{e:#}");
        assert!(UpdateFile::from_bytes(b"nonsense").is_err());
    }
}
