//! The `vigil` command line: one file per subcommand in [`cmd`], each a clap struct with
//! `run(self)`, over the library crates (`vigil-runtime`, `vigil-client`, `vigil-sim`,
//! `vigil-headfit`, and with the default `train` feature `vigil-train` and
//! `vigil-bench`). What a person sees (tables, progress bars, the HTML report with its
//! plots) is decided here and nowhere else.

pub mod cmd;
pub mod report_html;
