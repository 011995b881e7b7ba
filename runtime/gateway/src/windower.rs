//! Cuts a multi-channel sample stream into overlapping windows at the model's rate.

use crate::error::{Result, RuntimeError};
use vigil_core::resample::Resampler;

/// One window, ready for the scorer.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// `channels * len` samples, channel-major, at the model's rate, not yet normalised.
    pub samples: Vec<f32>,
    /// Zero-based index of the window in the stream.
    pub index: u64,
    /// Time of the window's last sample, in seconds since the stream began.
    pub end_time_s: f64,
}

impl Window {
    /// A window of `samples` (`channels * len`, channel-major). Whether they are a
    /// measurement at all is the scorer's first check ([`vigil_core::sensor`]).
    pub fn new(samples: Vec<f32>, index: u64, end_time_s: f64) -> Self {
        Window { samples, index, end_time_s }
    }
}

/// Turns interleaved frames (one sample per channel) into windows of `len` samples every
/// `hop` samples, resampling each channel from the stream's rate to the model's.
#[derive(Debug)]
pub struct Windower {
    channels: usize,
    len: usize,
    hop: usize,
    model_rate: f64,
    resamplers: Option<Vec<Resampler>>,
    /// Per-channel output of the resamplers for the current frame.
    resampled: Vec<Vec<f32>>,
    buffers: Vec<Vec<f32>>,
    /// Samples still to drop before the next window starts (when `hop > len`).
    skip: usize,
    /// Model-rate samples produced so far per channel.
    produced: u64,
    emitted: u64,
}

impl Windower {
    /// A windower for a stream of `channels` at `stream_rate` Hz feeding windows of
    /// `len` samples every `hop` samples at `model_rate` Hz.
    pub fn new(channels: usize, stream_rate: f64, model_rate: f64, len: usize, hop: usize) -> Result<Self> {
        if channels == 0 || len == 0 || hop == 0 {
            return Err(RuntimeError::StreamMismatch(
                "channels, window and hop must all be at least 1".into(),
            ));
        }
        let resamplers = if (stream_rate - model_rate).abs() > 1e-9 {
            let r = Resampler::new(stream_rate, model_rate)?;
            Some(vec![r; channels])
        } else {
            None
        };
        Ok(Windower {
            channels,
            len,
            hop,
            model_rate,
            resamplers,
            resampled: vec![Vec::new(); channels],
            buffers: vec![Vec::with_capacity(len + hop); channels],
            skip: 0,
            produced: 0,
            emitted: 0,
        })
    }

    /// Whether the stream is being resampled.
    pub fn resamples(&self) -> bool {
        self.resamplers.is_some()
    }

    /// Pushes interleaved samples (a whole number of frames) and calls `on_window` for
    /// each completed window.
    pub fn push(&mut self, interleaved: &[f32], mut on_window: impl FnMut(Window)) {
        for frame in interleaved.chunks_exact(self.channels) {
            match &mut self.resamplers {
                None => {
                    for (buf, &v) in self.buffers.iter_mut().zip(frame) {
                        buf.push(v);
                    }
                    self.after_sample(&mut on_window);
                }
                Some(rs) => {
                    // All channels share one ratio, so each emits the same number of
                    // samples for this frame.
                    for ((r, &v), out) in rs.iter_mut().zip(frame).zip(&mut self.resampled) {
                        out.clear();
                        r.push(v, |y| out.push(y));
                    }
                    for i in 0..self.resampled[0].len() {
                        for (buf, out) in self.buffers.iter_mut().zip(&self.resampled) {
                            buf.push(out[i]);
                        }
                        self.after_sample(&mut on_window);
                    }
                }
            }
        }
    }

    /// Accounts for one new sample per channel, at the tail of the buffers.
    fn after_sample(&mut self, on_window: &mut impl FnMut(Window)) {
        self.produced += 1;
        if self.skip > 0 {
            self.skip -= 1;
            for buf in &mut self.buffers {
                buf.pop();
            }
            return;
        }
        if self.buffers[0].len() < self.len {
            return;
        }
        let mut samples = Vec::with_capacity(self.channels * self.len);
        for buf in &self.buffers {
            samples.extend_from_slice(buf);
        }
        on_window(Window {
            samples,
            index: self.emitted,
            end_time_s: self.produced as f64 / self.model_rate,
        });
        self.emitted += 1;
        let drop = self.hop.min(self.len);
        for buf in &mut self.buffers {
            buf.drain(..drop);
        }
        self.skip = self.hop.saturating_sub(self.len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(w: &mut Windower, x: &[f32]) -> Vec<Window> {
        let mut out = Vec::new();
        w.push(x, |win| out.push(win));
        out
    }

    #[test]
    fn overlapping_windows_at_the_same_rate() {
        let mut w = Windower::new(2, 100.0, 100.0, 4, 2).unwrap();
        // Channel 0 counts up, channel 1 counts down.
        let x: Vec<f32> = (0..10).flat_map(|i| [i as f32, -(i as f32)]).collect();
        let wins = collect(&mut w, &x);
        assert_eq!(wins.len(), 4);
        assert_eq!(wins[0].samples, vec![0., 1., 2., 3., 0., -1., -2., -3.]);
        assert_eq!(wins[1].samples[..4], [2., 3., 4., 5.]);
        assert_eq!(wins[3].samples[..4], [6., 7., 8., 9.]);
        assert!((wins[0].end_time_s - 0.04).abs() < 1e-12);
        assert_eq!(wins[3].index, 3);
    }

    #[test]
    fn windows_do_not_depend_on_chunking() {
        let x: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.1).sin()).collect();
        let mut a = Windower::new(1, 300.0, 100.0, 32, 8).unwrap();
        let whole = collect(&mut a, &x);
        let mut b = Windower::new(1, 300.0, 100.0, 32, 8).unwrap();
        let mut pieces = Vec::new();
        for chunk in x.chunks(7) {
            pieces.extend(collect(&mut b, chunk));
        }
        assert_eq!(whole, pieces);
        assert!(a.resamples());
        // 1000 samples at 300 Hz ~ 333 at 100 Hz, less the resampler's latency.
        assert!(whole.len() >= 30 && whole.len() <= 38, "{}", whole.len());
    }

    #[test]
    fn hop_longer_than_window_skips_samples() {
        let mut w = Windower::new(1, 10.0, 10.0, 2, 5).unwrap();
        let x: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let wins = collect(&mut w, &x);
        let firsts: Vec<f32> = wins.iter().map(|w| w.samples[0]).collect();
        assert_eq!(firsts, vec![0., 5., 10.]);
    }
}
