//! `vigil`: the command line of the Vigil edge inference runtime.

use clap::Parser;
use std::process::ExitCode;
use vigil::cmd::Cli;

/// Shows what Vigil's libraries log: information on standard output as it is (on standard
/// error when the command's standard output is data, `--json`), warnings and errors on
/// standard error behind `warning:`. Other crates' records (tract reports
/// its CPU detection at info level) and debug records show only with `VIGIL_LOG=debug`,
/// so standard output stays what the command prints (JSON lines with `--json`).
struct Console {
    debug: bool,
}

impl log::Log for Console {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.debug || (metadata.level() <= log::Level::Info && metadata.target().starts_with("vigil"))
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let ours = record.target().starts_with("vigil");
        match record.level() {
            log::Level::Info
                if ours && !vigil::cmd::STDOUT_IS_DATA.load(std::sync::atomic::Ordering::Relaxed) =>
            {
                println!("{}", record.args())
            }
            log::Level::Info if ours => eprintln!("{}", record.args()),
            log::Level::Warn | log::Level::Error if ours => eprintln!("warning: {}", record.args()),
            _ => eprintln!("{}: {}", record.target(), record.args()),
        }
    }

    fn flush(&self) {}
}

fn main() -> ExitCode {
    let debug = std::env::var("VIGIL_LOG").is_ok_and(|v| v == "debug");
    if log::set_boxed_logger(Box::new(Console { debug })).is_ok() {
        log::set_max_level(if debug { log::LevelFilter::Debug } else { log::LevelFilter::Info });
    }
    let cli = Cli::parse();
    match cli.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A closed pipe (`vigil run ... | head`) is not an error.
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
