//! `vigil keygen` and `vigil sign`: the publisher's Ed25519 key and update signatures.

use anyhow::{bail, Context, Result};
use clap::Args;
use ed25519_dalek::SigningKey;
use rand::RngCore;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use vigil_client::update_file::{public_key_text, read_secret_key, secret_key_text, UpdateFile};
use vigil_core::hex;

/// Make an Ed25519 key pair for signing head updates: KEY (secret, mode 0600) and
/// KEY.pub (to provision on devices).
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Secret key file to write; the public key goes to the same name plus `.pub`.
    #[arg(long, short)]
    output: PathBuf,
    /// Overwrite existing key files.
    #[arg(long)]
    force: bool,
}

impl KeygenArgs {
    /// Runs the command.
    pub fn run(self) -> Result<()> {
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        let key = SigningKey::from_bytes(&seed);
        let public = public_path(&self.output);
        for path in [&self.output, &public] {
            if path.exists() && !self.force {
                bail!("{} exists; pass --force to replace it (devices provisioned with its key will refuse new updates)", path.display());
            }
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&self.output)
            .with_context(|| format!("cannot write {}", self.output.display()))?;
        file.write_all(secret_key_text(&key).as_bytes())?;
        std::fs::write(&public, public_key_text(&key))
            .with_context(|| format!("cannot write {}", public.display()))?;
        println!(
            "secret key {} (keep it off devices), public key {}",
            self.output.display(),
            public.display()
        );
        Ok(())
    }
}

fn public_path(secret: &Path) -> PathBuf {
    let mut name = secret.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// Sign a head update file with a secret key from `vigil keygen`.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// Secret key file.
    #[arg(long, short)]
    key: PathBuf,
    /// The update file to sign.
    update: PathBuf,
    /// Where to write the signed update [default: in place].
    #[arg(long, short)]
    output: Option<PathBuf>,
}

impl SignArgs {
    /// Runs the command.
    pub fn run(self) -> Result<()> {
        let key = read_secret_key(&self.key)?;
        let mut file = UpdateFile::read(&self.update)?;
        file.sign(&key);
        let out = self.output.as_ref().unwrap_or(&self.update);
        file.write(out)?;
        println!(
            "signed head version {} for model {} with key {}: {}",
            file.header.version,
            &hex::encode(&file.header.model_hash)[..16],
            &hex::encode(key.verifying_key().as_bytes())[..16],
            out.display()
        );
        Ok(())
    }
}
