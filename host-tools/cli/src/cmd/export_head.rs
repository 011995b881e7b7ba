//! `vigil export-head`: a model's head as an update file.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use vigil_client::update_file::UpdateFile;
use vigil_core::hex;

/// Write a model's head, normal-state prototype, threshold and alarm policy as an unsigned
/// head update (`.vup`) for devices that run the same model; sign it with `vigil sign`.
#[derive(Debug, Args)]
pub struct ExportHeadArgs {
    /// ONNX model (typically fine-tuned) [default: the built-in reference model, bearing-cnn-v3].
    #[arg(long)]
    model: Option<PathBuf>,
    /// Output file.
    #[arg(long, short)]
    output: PathBuf,
    /// Version of the update [default: the model's head version + 1].
    #[arg(long)]
    version: Option<u32>,
    /// Quantise the weights to int8 (one scale per class), about 4x smaller.
    #[arg(long)]
    int8: bool,
}

impl ExportHeadArgs {
    /// Runs the command.
    pub fn run(self) -> Result<()> {
        let model = vigil_runtime::builtin::load_model(self.model.as_deref())?;
        let version = self.version.unwrap_or(model.metadata().head_version + 1);
        let head = model.head_update(version, self.int8)?;
        let file = UpdateFile::for_head(&head)?;
        file.write(&self.output)?;
        println!(
            "head version {version} of model {} ({} x {}, {}): {} payload bytes, unsigned, in {}",
            &hex::encode(&head.model_hash)[..16],
            head.classes,
            head.inputs,
            if self.int8 { "int8" } else { "f32" },
            file.payload.len(),
            self.output.display()
        );
        Ok(())
    }
}
