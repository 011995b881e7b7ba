//! `.vup` files: a head update as `vigil export-head` writes it and `vigil sign` signs it.
//!
//! Layout (see docs/wire-format.md): `VIGILUP1`, u32 LE length + postcard `UpdateHeader`,
//! u32 LE length + payload, then `0` (unsigned) or `1` + the 64-byte Ed25519 signature.

use crate::{ClientError, Result};
use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};
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
        if at != bytes.len() {
            return Err(ClientError::Invalid(format!(
                "{} unexpected bytes after the end of the update at byte {at}; the file was altered or \
                 joined to another (export it again with `vigil export-head`)",
                bytes.len() - at
            )));
        }
        let file = UpdateFile { header, payload, signature };
        file.check()?;
        Ok(file)
    }

    /// Checks that the header describes the payload: its length, its SHA-256, and the
    /// version and model of the head it carries.
    pub fn check(&self) -> Result<()> {
        let (header, payload) = (&self.header, &self.payload);
        if header.length as usize != payload.len() {
            return Err(ClientError::Invalid(format!(
                "header says {} payload bytes, the file holds {}",
                header.length,
                payload.len()
            )));
        }
        if <[u8; 32]>::from(Sha256::digest(payload)) != header.sha256 {
            return Err(ClientError::Invalid(
                "the payload does not match the SHA-256 in its header: it was altered after export".into(),
            ));
        }
        let head = HeadSnapshot::decode(payload)
            .map_err(ClientError::invalid("the payload is not a head update"))?
            .head;
        if head.version != header.version {
            return Err(ClientError::Invalid(format!(
                "the header says head version {}, the payload version {}: one of them was altered",
                header.version, head.version
            )));
        }
        if head.model_hash != header.model_hash {
            return Err(ClientError::Invalid(
                "the header and the payload name different models: one of them was altered".into(),
            ));
        }
        Ok(())
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

/// The key kinds a key file holds, told apart by their length: a public key is 64 hex
/// digits (32 bytes); a secret key file from `vigil keygen` is 128 (the 32-byte seed, then
/// its public key, as libsodium keeps Ed25519 secret keys). Secret key files of 64 digits
/// from earlier versions are still read as secret, unless their name ends in `.pub`.
fn key_digits(path: &Path) -> Result<Vec<u8>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ClientError::file(format!("cannot read key {}", path.display()), e))?;
    let text = text.trim();
    let half = |range: std::ops::Range<usize>| text.get(range).and_then(vigil_core::hex::decode_32);
    let bytes = match text.len() {
        64 => half(0..64).map(|key| key.to_vec()),
        128 => half(0..64).zip(half(64..128)).map(|(seed, public)| [seed, public].concat()),
        _ => None,
    };
    match bytes {
        Some(bytes) => Ok(bytes),
        None => Err(ClientError::Invalid(format!(
            "key {} must hold 64 hex digits (a public key) or 128 (a secret key), as `vigil keygen` writes them",
            path.display()
        ))),
    }
}

/// Reads a secret (signing) key file made by `vigil keygen`; a public key file is refused.
pub fn read_secret_key(path: &Path) -> Result<SigningKey> {
    let bytes = key_digits(path)?;
    let legacy_public = bytes.len() == 32 && path.extension().is_some_and(|x| x == "pub");
    if legacy_public {
        return Err(ClientError::Invalid(format!(
            "{} is a public key; signing needs the secret key `vigil keygen -o KEY` wrote to KEY (without .pub)",
            path.display()
        )));
    }
    let seed: [u8; 32] = bytes[..32].try_into().map_err(ClientError::invalid("secret key"))?;
    let key = SigningKey::from_bytes(&seed);
    if bytes.len() == 64 && bytes[32..] != key.verifying_key().to_bytes() {
        return Err(ClientError::Invalid(format!(
            "secret key {} is damaged: its second half is not the public key of its first",
            path.display()
        )));
    }
    Ok(key)
}

/// Reads a public (verifying) key file made by `vigil keygen` (`KEY.pub`); a secret key
/// file is refused, so that no secret key is ever provisioned on a device.
pub fn read_public_key(path: &Path) -> Result<[u8; 32]> {
    let bytes = key_digits(path)?;
    if bytes.len() == 64 {
        return Err(ClientError::Invalid(format!(
            "{} is a secret key; devices take the public key `vigil keygen` wrote beside it ({}.pub), \
             and the secret key stays with the publisher",
            path.display(),
            path.display()
        )));
    }
    let key: [u8; 32] = bytes.try_into().map_err(|_| ClientError::Invalid("public key".into()))?;
    ed25519_dalek::VerifyingKey::from_bytes(&key).map_err(|_| {
        ClientError::Invalid(format!("public key {} is not a valid Ed25519 point", path.display()))
    })?;
    Ok(key)
}

/// The text of a secret key file: the seed and its public key, 128 hex digits.
pub fn secret_key_text(key: &SigningKey) -> String {
    let mut bytes = key.to_bytes().to_vec();
    bytes.extend_from_slice(key.verifying_key().as_bytes());
    format!("{}\n", vigil_core::hex::encode(&bytes))
}

/// The text of a public key file: 64 hex digits.
pub fn public_key_text(key: &SigningKey) -> String {
    format!("{}\n", vigil_core::hex::encode(key.verifying_key().as_bytes()))
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
