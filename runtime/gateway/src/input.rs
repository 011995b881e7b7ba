//! Sample-stream readers: CSV, WAV, raw f32le and the Edge Impulse data-forwarder lines.
//!
//! Every reader yields interleaved frames in chunks, so `vigil run` can score a live
//! stream from standard input as it arrives.

use crate::error::{Result, RuntimeError};
use std::io::{BufRead, BufReader, Read};

/// Input formats `vigil run` understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// Comma-separated values, one frame per line; an optional header line; a
    /// `# sample_rate_hz=N` comment line gives the rate.
    Csv,
    /// RIFF WAVE (integer or float samples; rate and channels from the header).
    Wav,
    /// Raw little-endian 32-bit floats, interleaved (needs --rate and --channels).
    F32le,
    /// Edge Impulse data-forwarder lines: one sample per line, values separated by
    /// commas or tabs.
    Forwarder,
}

impl InputFormat {
    /// Every format, by the name it goes by in options and config files.
    pub const NAMES: [(&'static str, InputFormat); 4] = [
        ("csv", InputFormat::Csv),
        ("wav", InputFormat::Wav),
        ("f32le", InputFormat::F32le),
        ("forwarder", InputFormat::Forwarder),
    ];

    /// Guesses the format from a file name.
    pub fn from_path(path: &str) -> Option<Self> {
        let lower = path.to_ascii_lowercase();
        if lower.ends_with(".csv") {
            Some(InputFormat::Csv)
        } else if lower.ends_with(".wav") {
            Some(InputFormat::Wav)
        } else if lower.ends_with(".f32") || lower.ends_with(".f32le") || lower.ends_with(".raw") {
            Some(InputFormat::F32le)
        } else {
            None
        }
    }
}

/// A stream of interleaved frames.
pub trait SampleSource: Send {
    /// Channels per frame, once known (text formats learn it from the first line).
    fn channels(&self) -> Option<usize>;
    /// Sample rate, when the stream carries it.
    fn sample_rate_hz(&self) -> Option<f64>;
    /// Reads up to about `max_frames` frames into `out` (cleared first); `Ok(false)` at
    /// the end of the stream.
    fn read_chunk(&mut self, out: &mut Vec<f32>, max_frames: usize) -> Result<bool>;
}

/// Opens `path` (`-` for standard input) in `format`.
/// The source reports only the rate the input itself states; a `--rate` override is
/// applied by the stream (`crate::stream::StreamOptions::rate`), the one place for it.
pub fn open(path: &str, format: InputFormat, channels: Option<usize>) -> Result<Box<dyn SampleSource>> {
    let reader: Box<dyn Read + Send> = if path == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(
            std::fs::File::open(path)
                .map_err(|e| RuntimeError::io(format!("cannot open input {path}"), e))?,
        )
    };
    let name = if path == "-" { "<stdin>".to_string() } else { path.to_string() };
    Ok(match format {
        InputFormat::Csv => Box::new(TextSource::new(reader, name, true, channels)?),
        InputFormat::Forwarder => Box::new(TextSource::new(reader, name, false, channels)?),
        InputFormat::Wav => Box::new(WavSource::new(reader, name)?),
        InputFormat::F32le => {
            let Some(channels) = channels else {
                return Err(RuntimeError::Input(format!("{name}: raw f32le input needs --channels")));
            };
            if channels == 0 {
                return Err(RuntimeError::Input("--channels must be at least 1".into()));
            }
            Box::new(RawSource { reader: BufReader::new(reader), name, channels, offset: 0 })
        }
    })
}

/// The error for sample data a WAV reader could not decode.
fn corrupt(name: &str, e: hound::Error) -> RuntimeError {
    RuntimeError::Input(format!("{name}: truncated or corrupt sample data ({e})"))
}

impl std::str::FromStr for InputFormat {
    type Err = RuntimeError;

    /// Parses a format's name (any case), as options and config files give it.
    fn from_str(name: &str) -> Result<Self> {
        Self::NAMES.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, f)| *f).ok_or_else(|| {
            RuntimeError::Input(format!("input format `{name}` is not one of csv, wav, f32le, forwarder"))
        })
    }
}

/// The longest line a text input may have: a frame of up to 64 channels needs far less, and
/// a file without line breaks must not be read whole into memory.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// CSV and data-forwarder lines.
struct TextSource {
    reader: BufReader<Box<dyn Read + Send>>,
    name: String,
    line_no: usize,
    channels: Option<usize>,
    rate: Option<f64>,
    allow_header: bool,
    pending: Option<(usize, String)>,
    /// Cells are separated by `;` or tabs and a comma is the decimal mark (`0,25;1,5`, as
    /// spreadsheets write in much of Europe).
    decimal_comma: bool,
}

impl TextSource {
    fn new(
        reader: Box<dyn Read + Send>,
        name: String,
        allow_header: bool,
        channels: Option<usize>,
    ) -> Result<Self> {
        let mut s = TextSource {
            reader: BufReader::new(reader),
            name,
            line_no: 0,
            channels,
            rate: None,
            allow_header,
            pending: None,
            decimal_comma: false,
        };
        s.read_preamble()?;
        Ok(s)
    }

    /// Reads comment lines and an optional header, stopping at the first data line so
    /// the rate and channel count are known before any window is cut.
    fn read_preamble(&mut self) -> Result<()> {
        while let Some(line) = self.next_line()? {
            let t = line.trim();
            if t.is_empty() {
                continue;
            }
            if let Some(comment) = t.strip_prefix('#') {
                let setting = comment.split_once('=').map(|(k, v)| (k.trim(), v));
                if let Some(("sample_rate_hz", v)) = setting {
                    let rate: f64 = v.trim().parse().map_err(|_| {
                        RuntimeError::Input(format!(
                            "{}: line {}: cannot read sample rate `{}`",
                            self.name,
                            self.line_no,
                            v.trim()
                        ))
                    })?;
                    self.rate.get_or_insert(rate);
                }
                continue;
            }
            let cells: Vec<&str> = split_cells(t, false);
            if self.allow_header && cells.iter().all(|c| c.parse::<f32>().is_err()) {
                let channels = *self.channels.get_or_insert(cells.len());
                let log_level = if channels > 1 { log::Level::Info } else { log::Level::Debug };
                log::log!(
                    log_level,
                    "{}: header line `{t}` taken as {channels} channel(s), one per column; a time or \
                     index column counts as one (drop it, or give --channels)",
                    self.name
                );
                continue;
            }
            self.decimal_comma = t.contains(',') && t.contains([';', '\t']);
            let cells = split_cells(t, self.decimal_comma);
            if self.decimal_comma {
                log::info!(
                    "{}: values separated by `;` or tabs, with decimal commas: `{t}` read as {} channel(s)",
                    self.name,
                    cells.len()
                );
            } else if cells.len() == 2 && cells.iter().all(|c| c.parse::<i64>().is_ok()) {
                log::warn!(
                    "{}: line {}: `{t}` read as 2 channels of whole numbers; if the comma is a decimal \
                     mark (`0,25` for 0.25), separate the values with `;` or use decimal points",
                    self.name,
                    self.line_no
                );
            }
            self.channels.get_or_insert(cells.len());
            self.pending = Some((self.line_no, line));
            break;
        }
        Ok(())
    }

    fn next_line(&mut self) -> Result<Option<String>> {
        let mut bytes = Vec::new();
        let limit = MAX_LINE_BYTES as u64 + 1;
        let read = (&mut self.reader).take(limit).read_until(b'\n', &mut bytes).map_err(|e| {
            RuntimeError::io(format!("{}: line {}: cannot read", self.name, self.line_no + 1), e)
        })?;
        match read {
            0 => Ok(None),
            _ => {
                self.line_no += 1;
                if bytes.len() > MAX_LINE_BYTES {
                    return Err(RuntimeError::Input(format!(
                        "{}: line {} is longer than {MAX_LINE_BYTES} bytes; a line holds one frame of \
                         samples (is this really a CSV file?)",
                        self.name, self.line_no
                    )));
                }
                if bytes.ends_with(b"\n") {
                    bytes.pop();
                    if bytes.ends_with(b"\r") {
                        bytes.pop();
                    }
                }
                let mut line = String::from_utf8(bytes).map_err(|e| {
                    RuntimeError::Input(format!(
                        "{}: line {} is not text (byte {} of the line is not UTF-8)",
                        self.name,
                        self.line_no,
                        e.utf8_error().valid_up_to() + 1
                    ))
                })?;
                if self.line_no == 1 {
                    // A byte-order mark, as spreadsheet exports write.
                    if let Some(rest) = line.strip_prefix('\u{feff}') {
                        line = rest.to_string();
                    }
                }
                Ok(Some(line))
            }
        }
    }

    fn parse_line(&self, line_no: usize, line: &str, out: &mut Vec<f32>) -> Result<()> {
        let cells = split_cells(line.trim(), self.decimal_comma);
        let channels = self.channels.unwrap_or(cells.len());
        if cells.len() != channels {
            return Err(RuntimeError::Input(format!("{}: line {line_no} has {} values, earlier lines have {channels}; every line must hold one value per channel",
                self.name,
                cells.len()
            )));
        }
        for (col, cell) in cells.iter().enumerate() {
            let parsed = if self.decimal_comma { cell.replacen(',', ".", 1).parse() } else { cell.parse() };
            let v: f32 = parsed.map_err(|_| {
                RuntimeError::Input(format!(
                    "{}: line {line_no}, column {}: `{cell}` is not a number",
                    self.name,
                    col + 1
                ))
            })?;
            out.push(v);
        }
        Ok(())
    }
}

/// The cells of a line: separated by commas, tabs or semicolons, or (`decimal_comma`)
/// by tabs or semicolons only.
fn split_cells(line: &str, decimal_comma: bool) -> Vec<&str> {
    if decimal_comma {
        line.split(['\t', ';']).map(str::trim).collect()
    } else {
        line.split([',', '\t', ';']).map(str::trim).collect()
    }
}

impl SampleSource for TextSource {
    fn channels(&self) -> Option<usize> {
        self.channels
    }

    fn sample_rate_hz(&self) -> Option<f64> {
        self.rate
    }

    fn read_chunk(&mut self, out: &mut Vec<f32>, max_frames: usize) -> Result<bool> {
        out.clear();
        if let Some((no, line)) = self.pending.take() {
            self.parse_line(no, &line, out)?;
        }
        let channels = self.channels.unwrap_or(1);
        while out.len() < max_frames * channels {
            let Some(line) = self.next_line()? else { break };
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            self.parse_line(self.line_no, t, out)?;
        }
        Ok(!out.is_empty())
    }
}

/// WAV files through hound.
struct WavSource {
    reader: hound::WavReader<BufReader<Box<dyn Read + Send>>>,
    name: String,
    spec: hound::WavSpec,
}

impl WavSource {
    fn new(reader: Box<dyn Read + Send>, name: String) -> Result<Self> {
        let reader = hound::WavReader::new(BufReader::new(reader))
            .map_err(|e| RuntimeError::Input(format!("{name}: not a readable WAV file ({e})")))?;
        let spec = reader.spec();
        Ok(WavSource { reader, name, spec })
    }
}

impl SampleSource for WavSource {
    fn channels(&self) -> Option<usize> {
        Some(usize::from(self.spec.channels))
    }

    fn sample_rate_hz(&self) -> Option<f64> {
        Some(f64::from(self.spec.sample_rate))
    }

    fn read_chunk(&mut self, out: &mut Vec<f32>, max_frames: usize) -> Result<bool> {
        out.clear();
        let n = max_frames * usize::from(self.spec.channels);
        let name = &self.name;
        match self.spec.sample_format {
            hound::SampleFormat::Float => {
                for s in self.reader.samples::<f32>().take(n) {
                    out.push(s.map_err(|e| corrupt(name, e))?);
                }
            }
            hound::SampleFormat::Int => {
                let scale = 1.0 / (1u64 << (self.spec.bits_per_sample.max(1) - 1)) as f32;
                for s in self.reader.samples::<i32>().take(n) {
                    out.push(s.map_err(|e| corrupt(name, e))? as f32 * scale);
                }
            }
        }
        Ok(!out.is_empty())
    }
}

/// Raw interleaved little-endian f32.
struct RawSource {
    reader: BufReader<Box<dyn Read + Send>>,
    name: String,
    channels: usize,
    offset: u64,
}

impl SampleSource for RawSource {
    fn channels(&self) -> Option<usize> {
        Some(self.channels)
    }

    /// Raw samples carry no rate; it comes from `--rate`.
    fn sample_rate_hz(&self) -> Option<f64> {
        None
    }

    fn read_chunk(&mut self, out: &mut Vec<f32>, max_frames: usize) -> Result<bool> {
        out.clear();
        let mut buf = vec![0u8; max_frames * self.channels * 4];
        let mut filled = 0;
        while filled < buf.len() {
            let n = self
                .reader
                .read(&mut buf[filled..])
                .map_err(|e| RuntimeError::io(format!("{}: read failed", self.name), e))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        let whole = filled - filled % (4 * self.channels);
        if whole != filled {
            log::warn!(
                "{}: {} trailing bytes at byte offset {} do not form a whole frame; ignored",
                self.name,
                filled - whole,
                self.offset + whole as u64
            );
        }
        self.offset += filled as u64;
        out.extend(buf[..whole].chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
        Ok(!out.is_empty())
    }
}
