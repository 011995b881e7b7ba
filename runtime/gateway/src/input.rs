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
    /// The channels' names, when the stream gives them (a CSV header line).
    fn channel_names(&self) -> Option<&[String]> {
        None
    }
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
fn corrupt(name: &str, e: impl std::fmt::Display) -> RuntimeError {
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
    /// The header line's cells, when there is one.
    header: Option<Vec<String>>,
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
            header: None,
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
                self.header = Some(cells.iter().map(|c| (*c).to_owned()).collect());
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

    fn channel_names(&self) -> Option<&[String]> {
        self.header.as_deref().filter(|names| Some(names.len()) == self.channels)
    }
}

/// WAV: the header through hound, the samples read here, so that a stream from a pipe
/// (`arecord` writing to standard output) works: such a writer cannot go back to fill in
/// the data length, and leaves it 0 or near 2^31. Such a length is taken as "until the
/// end of the stream"; a partial frame at the end is dropped.
struct WavSource {
    reader: BufReader<Box<dyn Read + Send>>,
    name: String,
    spec: hound::WavSpec,
    /// Samples left by the data chunk's length; None until the end of the stream.
    remaining: Option<u64>,
    bytes: Vec<u8>,
}

/// A data chunk at least this long (in bytes) is a streaming writer's placeholder.
const WAV_STREAMING_BYTES: u64 = 0x7fff_0000;

impl WavSource {
    fn new(reader: Box<dyn Read + Send>, name: String) -> Result<Self> {
        let reader = placeholder_length_as_zero(reader)
            .map_err(|e| RuntimeError::io(format!("reading the WAV header of {name}"), e))?;
        let wav = hound::WavReader::new(BufReader::new(reader))
            .map_err(|e| RuntimeError::Input(format!("{name}: not a readable WAV file ({e})")))?;
        let spec = wav.spec();
        match (spec.sample_format, spec.bits_per_sample) {
            (hound::SampleFormat::Float, 32) | (hound::SampleFormat::Int, 8 | 16 | 24 | 32) => {}
            (format, bits) => {
                return Err(RuntimeError::Input(format!(
                    "{name}: {bits}-bit {format:?} WAV samples are not supported; write 16-, 24- or 32-bit \
                     integer or 32-bit float"
                )))
            }
        }
        let len = u64::from(wav.len());
        let bytes = len * u64::from(spec.bits_per_sample / 8);
        let remaining = (len != 0 && bytes < WAV_STREAMING_BYTES).then_some(len);
        Ok(WavSource { reader: wav.into_inner(), name, spec, remaining, bytes: Vec::new() })
    }

    fn decode(&self, sample: &[u8]) -> f32 {
        let bits = self.spec.bits_per_sample;
        let scale = 1.0 / (1u64 << (bits - 1)) as f32;
        match (self.spec.sample_format, sample) {
            (hound::SampleFormat::Float, &[a, b, c, d]) => f32::from_le_bytes([a, b, c, d]),
            (_, &[a]) => (f32::from(a) - 128.0) * scale,
            (_, &[a, b]) => f32::from(i16::from_le_bytes([a, b])) * scale,
            (_, &[a, b, c]) => (i32::from_le_bytes([0, a, b, c]) >> 8) as f32 * scale,
            (_, &[a, b, c, d]) => i32::from_le_bytes([a, b, c, d]) as f32 * scale,
            _ => 0.0,
        }
    }
}

/// Reads a WAV stream's header and, when its data chunk's length is a streaming writer's
/// placeholder (at least [`WAV_STREAMING_BYTES`], which may not even be a whole number of
/// samples), writes it as 0 before the header parser sees it.
fn placeholder_length_as_zero(mut reader: Box<dyn Read + Send>) -> std::io::Result<Box<dyn Read + Send>> {
    let mut head = Vec::new();
    let mut buffer = [0u8; 64];
    // The header is at most a few chunks; give up looking after 64 KiB.
    while head.len() < 65_536 {
        let at = head.windows(4).position(|w| w == b"data");
        if let Some(at) = at.filter(|&at| head.len() >= at + 8) {
            let len = u32::from_le_bytes([head[at + 4], head[at + 5], head[at + 6], head[at + 7]]);
            if u64::from(len) >= WAV_STREAMING_BYTES {
                head[at + 4..at + 8].copy_from_slice(&0u32.to_le_bytes());
            }
            break;
        }
        let n = reader.read(&mut buffer[..if head.len() < 64 { 64 - head.len() } else { 1 }])?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buffer[..n]);
    }
    Ok(Box::new(std::io::Cursor::new(head).chain(reader)))
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
        let channels = usize::from(self.spec.channels);
        let width = usize::from(self.spec.bits_per_sample / 8);
        let mut samples = max_frames * channels;
        if let Some(left) = self.remaining {
            samples = samples.min(usize::try_from(left).unwrap_or(usize::MAX));
        }
        self.bytes.resize(samples * width, 0);
        let mut filled = 0;
        while filled < self.bytes.len() {
            match self.reader.read(&mut self.bytes[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(RuntimeError::io(format!("reading {}", self.name), e)),
            }
        }
        // Whole frames only: a partial one at the end of a stream is dropped. A file
        // whose header states its length must hold it.
        let frames = filled / (width * channels);
        if filled < self.bytes.len() {
            if let Some(left) = self.remaining {
                return Err(corrupt(
                    &self.name,
                    format!("the header promises {left} more samples; only {} follow", filled / width),
                ));
            }
        }
        let bytes = std::mem::take(&mut self.bytes);
        out.extend(bytes[..frames * width * channels].chunks_exact(width).map(|b| self.decode(b)));
        self.bytes = bytes;
        if let Some(left) = self.remaining.as_mut() {
            *left -= (frames * channels) as u64;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A WAV of `values` (one channel, 8 kHz) in `spec`'s sample format, as hound writes it.
    fn wav(bits: u16, float: bool, values: &[f32]) -> Vec<u8> {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 8000,
            bits_per_sample: bits,
            sample_format: if float { hound::SampleFormat::Float } else { hound::SampleFormat::Int },
        };
        let mut bytes = std::io::Cursor::new(Vec::new());
        let mut w = hound::WavWriter::new(&mut bytes, spec).unwrap();
        let full = (1i64 << (bits - 1)) as f32;
        for &v in values {
            if float {
                w.write_sample(v).unwrap();
            } else if bits == 8 {
                // hound takes 8-bit samples signed and stores them offset by 128.
                w.write_sample((v * full) as i8).unwrap();
            } else {
                w.write_sample((v * full) as i32).unwrap();
            }
        }
        w.finalize().unwrap();
        bytes.into_inner()
    }

    fn read(bytes: Vec<u8>) -> Result<Vec<f32>> {
        let mut source = WavSource::new(Box::new(std::io::Cursor::new(bytes)), "test.wav".into())?;
        let (mut all, mut chunk) = (Vec::new(), Vec::new());
        while source.read_chunk(&mut chunk, 3)? {
            all.extend_from_slice(&chunk);
        }
        Ok(all)
    }

    #[test]
    fn wav_samples_of_every_width_read_as_written() {
        let values = [0.0, 0.5, -0.5, -1.0, 0.25, -0.125, 0.75];
        for (bits, float) in [(8, false), (16, false), (24, false), (32, false), (32, true)] {
            let got = read(wav(bits, float, &values)).unwrap();
            assert_eq!(got.len(), values.len(), "{bits} bits");
            for (g, v) in got.iter().zip(values) {
                assert!((g - v).abs() < 1e-2, "{bits}-bit {float}: {g} for {v}");
            }
        }
    }

    #[test]
    fn a_streamed_wav_reads_to_the_end_and_a_truncated_file_is_refused() {
        let values = [0.5f32; 10];
        let whole = wav(16, false, &values);
        // The data length as a writer to a pipe leaves it: 0, or a placeholder near 2^31.
        let data = whole.windows(4).position(|w| w == b"data").unwrap();
        for placeholder in [0u32, 0x7fff_f000, u32::MAX] {
            let mut streamed = whole.clone();
            streamed[data + 4..data + 8].copy_from_slice(&placeholder.to_le_bytes());
            // A partial frame at the end of the stream is dropped.
            streamed.push(0x12);
            assert_eq!(read(streamed).unwrap().len(), 10, "{placeholder:#x}");
        }
        let truncated = whole[..whole.len() - 4].to_vec();
        let e = read(truncated).unwrap_err().to_string();
        assert!(e.contains("test.wav") && e.contains("promises"), "{e}");
    }

    #[test]
    fn a_csv_header_names_the_channels_only_when_it_has_one_name_per_column() {
        let text =
            |t: &str| -> Box<dyn Read + Send> { Box::new(std::io::Cursor::new(t.as_bytes().to_vec())) };
        let source =
            TextSource::new(text("# sample_rate_hz=16000\nde,nde\n0.1,0.2\n"), "a.csv".into(), true, None);
        assert_eq!(source.unwrap().channel_names(), Some(&["de".to_owned(), "nde".to_owned()][..]));
        let source = TextSource::new(text("time,de,nde\n0.1,0.2\n"), "b.csv".into(), true, Some(2));
        assert_eq!(source.unwrap().channel_names(), None);
        let source = TextSource::new(text("0.1,0.2\n"), "c.csv".into(), true, None);
        assert_eq!(source.unwrap().channel_names(), None);
    }
}
