//! Streamed embeddings: with a hop shorter than the window, only the new samples go
//! through the backbone.
//!
//! The backbone's convolutions are pulsed by tract-pulse: each hop of samples yields the
//! feature frames those samples complete, and tract keeps the context the convolutions
//! need between hops. The global pooling that turns frames into the embedding runs in
//! Rust over a ring of the last window's frames, so a scored window costs one hop of
//! convolution instead of a whole window of it.
//!
//! A streamed embedding equals the full-window one when two things hold, and the
//! streamer says which case it is in ([`StreamingEmbedder::exact`]):
//!
//! * **No edge frames.** A frame whose receptive field crosses a window boundary sees
//!   real neighbouring samples in the stream but zero padding in a lone window. Frames
//!   whose receptive field lies inside the window are equal to the full-window ones; a
//!   backbone of unpadded convolutions (the shipped one) has only such frames.
//! * **Normalisation that commutes with the backbone.** A fixed normalisation is the same
//!   for every sample, so it is applied hop by hop exactly. Per-window normalisation
//!   (centre on the window's mean, divide by its RMS) changes from one window to the next,
//!   so a frame made for one window is not quite the frame of the next. A *homogeneous*
//!   backbone (zero-sum first kernels, no biases: frames ignore a channel's mean and scale
//!   with the input) lets the streamer run the raw stream and divide the pooled frames by
//!   the window's RMS instead, which is exact; the streamer checks homogeneity numerically
//!   when it is built. Otherwise it normalises each hop with the statistics of the window
//!   that hop completes: an approximation whose effect on scores `vigil bench` measures
//!   (the shipped model is in this case; `docs/performance.md`).

use crate::error::{Result, RuntimeError};
use crate::metadata::ModelMetadata;
use crate::model::VigilModel;
use crate::patchify::Patchify;
use crate::plan::{backbone_graph, optimise, plan_input, Layout};
use crate::pooling::{not_streamable, pool, FrameCut, Pooling};
use std::collections::VecDeque;
use std::sync::Arc;
use tract_onnx::prelude::*;
use tract_pulse::internal::{PulsedModel, PulsedModelExt};
use vigil_core::normalise::{Centre, Scaling};

/// The last window's feature frames, pooled into an embedding as the graph would.
#[derive(Debug, Clone)]
pub struct FramePool {
    channels: usize,
    frames_per_window: usize,
    pooling: Pooling,
    /// `[channels, frames_per_window]`, each channel's frames in a circle (the pooling
    /// does not depend on their order).
    values: Vec<f32>,
    /// Frames held, at most `frames_per_window`.
    filled: usize,
    /// Column the next frame overwrites.
    next: usize,
}

impl FramePool {
    /// An empty pool of `frames_per_window` frames of `channels` values.
    pub fn new(channels: usize, frames_per_window: usize, pooling: Pooling) -> Self {
        FramePool {
            channels,
            frames_per_window,
            pooling,
            values: vec![0.0; channels * frames_per_window],
            filled: 0,
            next: 0,
        }
    }

    /// Appends frame `t` of `n` frames laid out channel-major (`[channels, n]`), dropping
    /// the oldest frame beyond a window.
    pub fn push(&mut self, frames: &[f32], n: usize, t: usize) {
        let f = self.frames_per_window;
        if f == 0 {
            return;
        }
        for c in 0..self.channels {
            self.values[c * f + self.next] = frames[c * n + t];
        }
        self.next = (self.next + 1) % f;
        self.filled = (self.filled + 1).min(f);
    }

    /// Forgets every frame.
    pub fn clear(&mut self) {
        self.filled = 0;
        self.next = 0;
    }

    /// The pooled frames divided by `scale`, once a whole window of frames is in.
    pub fn embedding(&self, scale: f32) -> Option<Vec<f32>> {
        if self.filled < self.frames_per_window {
            return None;
        }
        let mut out = pool(&self.values, self.channels, self.pooling);
        out.iter_mut().for_each(|e| *e /= scale);
        Some(out)
    }
}

/// The shape of a backbone's frames, for engines that stream it by other means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameLayout {
    /// Where the frames end and the pooling begins.
    pub cut: FrameCut,
    /// Values per frame.
    pub channels: usize,
    /// Frames per window.
    pub frames_per_window: usize,
    /// Input samples between consecutive frames.
    pub stride: usize,
    /// Input samples one frame depends on.
    pub receptive_field: usize,
}

/// Per-channel mean and RMS of the last `window` samples, kept by running sums in f64
/// (each block's sums are taken in f64 too, so adding and removing blocks for as long as a
/// stream runs does not drift).
#[derive(Debug, Clone)]
struct SlidingStats {
    window: usize,
    /// Each channel's last `window` samples in a circle.
    samples: Vec<Vec<f32>>,
    /// Samples held per channel, at most `window`.
    len: Vec<usize>,
    /// Where each channel's next sample goes.
    next: Vec<usize>,
    sum: Vec<f64>,
    sum_sq: Vec<f64>,
}

/// Sum and sum of squares of `x`, in f64, in four interleaved partial sums (which
/// vectorise; one running sum does not).
fn block_sums(x: &[f32]) -> (f64, f64) {
    let (mut s, mut q) = ([0.0f64; 4], [0.0f64; 4]);
    let chunks = x.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..4 {
            let v = f64::from(c[i]);
            s[i] += v;
            q[i] += v * v;
        }
    }
    let (ts, tq) =
        tail.iter().fold((0.0, 0.0), |(s, q), &v| (s + f64::from(v), q + f64::from(v) * f64::from(v)));
    (s.iter().sum::<f64>() + ts, q.iter().sum::<f64>() + tq)
}

impl SlidingStats {
    fn new(channels: usize, window: usize) -> Self {
        SlidingStats {
            window,
            samples: vec![vec![0.0; window]; channels],
            len: vec![0; channels],
            next: vec![0; channels],
            sum: vec![0.0; channels],
            sum_sq: vec![0.0; channels],
        }
    }

    /// Adds `block` to one channel's window, dropping its oldest samples beyond
    /// `window`.
    fn push(&mut self, channel: usize, block: &[f32]) {
        let w = self.window;
        // Of a block longer than the window only its last `window` samples stay.
        let block = &block[block.len().saturating_sub(w)..];
        if w == 0 || block.is_empty() {
            return;
        }
        let ring = &mut self.samples[channel];
        let start = self.next[channel];
        let k = block.len();
        // The block overwrites slots `start..start + k` (around the circle). Until the ring
        // is full, `start` is its length: the slots from `start` to the end are empty and
        // only those the block wraps onto hold samples.
        let full = self.len[channel] == w;
        let first = if full { &ring[start..(start + k).min(w)] } else { &[][..] };
        let second = &ring[..(start + k).saturating_sub(w)];
        let (out_s, out_q) = {
            let (a, b) = (block_sums(first), block_sums(second));
            (a.0 + b.0, a.1 + b.1)
        };
        let (in_s, in_q) = block_sums(block);
        self.sum[channel] += in_s - out_s;
        self.sum_sq[channel] += in_q - out_q;
        let head = k.min(w - start);
        ring[start..start + head].copy_from_slice(&block[..head]);
        ring[..k - head].copy_from_slice(&block[head..]);
        self.next[channel] = (start + k) % w;
        self.len[channel] = (self.len[channel] + k).min(w);
    }

    /// Mean and RMS about the mean of one channel's last samples.
    fn mean_rms(&self, channel: usize) -> (f32, f32) {
        let n = self.len[channel].max(1) as f64;
        let mean = self.sum[channel] / n;
        let var = (self.sum_sq[channel] / n - mean * mean).max(0.0);
        (mean as f32, var.sqrt() as f32)
    }
}

/// Turns one model's input stream into embeddings, one per hop, running only the new
/// samples through the backbone.
#[derive(Debug)]
pub struct StreamingEmbedder {
    plan: Arc<TypedRunnableModel>,
    state: TypedSimpleState,
    /// Index of the last window embedded by [`StreamingEmbedder::embed_window`].
    last_window: Option<u64>,
    delay_frames: usize,
    meta: ModelMetadata,
    hop: usize,
    frames_per_hop: usize,
    stats: SlidingStats,
    /// Frames still to discard: the pulsed graph's delay.
    to_skip: usize,
    frames: FramePool,
    input: Vec<f32>,
    /// The patchify layer run ahead of the pulsed plan, and its output.
    front: Option<Patchify>,
    front_frames: Vec<f32>,
    /// The layout of the pulsed plan's tensors, and its frames made channel-major.
    plan_layout: Layout,
    scratch: Vec<f32>,
    /// Raw samples per channel: the window of the next embedding plus the delay.
    history: Vec<VecDeque<f32>>,
    lag: usize,
    /// The backbone runs on the raw stream and the pooled frames are scaled.
    raw: bool,
    inexact: Option<String>,
    edge_frames: usize,
    layout: FrameLayout,
}

impl StreamingEmbedder {
    /// Pulses `model`'s backbone at `hop` samples.
    ///
    /// The hop must be a multiple of the backbone's total stride; the window must be a
    /// whole number of frames.
    pub fn new(model: &VigilModel, hop: usize) -> Result<Self> {
        let meta = model.metadata().clone();
        let cut = FrameCut::find(model.proto(), &meta)?;
        if hop == 0 || hop > meta.window {
            return Err(RuntimeError::StreamMismatch(format!(
                "hop {hop} must be between 1 and the model's window of {} samples",
                meta.window
            )));
        }
        let (feature_channels, frames_per_window) = frames_shape(model, &cut, &meta, meta.window)?;
        // One window more of input gives `window / stride` more frames.
        let (_, more) = frames_shape(model, &cut, &meta, 2 * meta.window)?;
        let stride = match more.checked_sub(frames_per_window) {
            Some(extra) if extra > 0 && meta.window.is_multiple_of(extra) => meta.window / extra,
            _ => return Err(not_streamable("its frames do not advance by a whole stride")),
        };
        if !hop.is_multiple_of(stride) {
            return Err(RuntimeError::StreamMismatch(format!(
                "hop {hop} is not a multiple of the backbone's stride of {stride} samples; use a hop of {}",
                (hop / stride).max(1) * stride
            )));
        }

        // The patchify layer, when the backbone starts with one, runs in Rust ahead of
        // the pulsed plan; it needs no context, so the plan streams its frames.
        let backbone = backbone_graph(model.proto(), &meta, &cut.frames_node, true, 1)?;
        let stream = backbone.stream.clone().ok_or_else(|| not_streamable("its graph has no stream axis"))?;
        let per_step = backbone.samples_per_step();
        let (front, plan_layout) = (backbone.front, backbone.layout);
        let typed = backbone.model.into_decluttered()?;
        let pulsed = PulsedModel::new(&typed, stream, &(hop / per_step).to_dim())?;
        let out = pulsed.output_fact(0)?.clone();
        let delay_frames = out.stream.as_ref().map(|s| s.delay).unwrap_or(0);
        let frames_per_hop =
            out.shape.as_concrete().and_then(|s| s.get(plan_layout.time_axis()).copied()).unwrap_or(0);
        if frames_per_hop != hop / stride {
            return Err(not_streamable("the pulsed backbone does not yield one frame per stride"));
        }
        let plan = optimise(pulsed.into_typed()?)?;
        let state = plan.spawn()?;
        let per_channel_scale = meta.channels == 1 || matches!(meta.normalisation.scaling, Scaling::Fixed(_));
        let edge_frames = edge_frames(model, &cut, &meta)?;
        // The shortest input that yields one frame.
        let (mut lo, mut hi) = (1, meta.window);
        while lo < hi {
            let mid = (lo + hi) / 2;
            match frames_shape(model, &cut, &meta, mid) {
                Ok(_) => hi = mid,
                Err(_) => lo = mid + 1,
            }
        }
        let layout = FrameLayout {
            cut: cut.clone(),
            channels: feature_channels,
            frames_per_window,
            stride,
            receptive_field: lo,
        };
        let homogeneous = is_homogeneous(typed_window(model, &cut, &meta, meta.window)?, &meta)?;
        // A fixed normalisation is the same for every sample, so normalising each hop is
        // exact; a per-window one is exact only on the raw stream of a homogeneous backbone.
        let per_sample = meta.normalisation.centre == Centre::None
            && matches!(meta.normalisation.scaling, Scaling::Fixed(_));
        let raw = !per_sample && homogeneous && per_channel_scale;
        let inexact = if edge_frames > 0 {
            Some(format!("{edge_frames} of {frames_per_window} frames reach past the window's edge"))
        } else if per_sample || raw {
            None
        } else if !homogeneous {
            Some("the backbone does not commute with per-window normalisation, so each hop is normalised by the window it completes".into())
        } else {
            Some(
                "channels are scaled separately, so each hop is normalised by the window it completes".into(),
            )
        };
        // The last frame out lags the newest sample by the pulsed delay; the window those
        // frames cover ends `lag` samples before the newest sample.
        let lag = (delay_frames + frames_per_window) * stride;
        let lag = lag
            .checked_sub(meta.window)
            .ok_or_else(|| not_streamable("its frames span more than a window"))?;
        Ok(StreamingEmbedder {
            plan,
            front,
            front_frames: Vec::new(),
            plan_layout,
            scratch: Vec::new(),
            last_window: None,
            delay_frames,
            history: vec![VecDeque::with_capacity(meta.window + lag + hop); meta.channels],
            lag,
            raw,
            inexact,
            edge_frames,
            layout,
            state,
            stats: SlidingStats::new(meta.channels, meta.window),
            meta,
            hop,
            frames_per_hop,
            to_skip: delay_frames,
            frames: FramePool::new(feature_channels, frames_per_window, cut.pooling),
            input: Vec::new(),
        })
    }

    /// Samples per hop.
    pub fn hop(&self) -> usize {
        self.hop
    }

    /// Whether embeddings equal the full-window ones (up to rounding); see the module
    /// documentation and [`StreamingEmbedder::inexact_reason`].
    pub fn exact(&self) -> bool {
        self.inexact.is_none()
    }

    /// Whether the backbone runs on the raw stream, the pooled frames being divided by
    /// each window's scale (a homogeneous backbone under per-window normalisation).
    pub fn scales_pooled_frames(&self) -> bool {
        self.raw
    }

    /// Why embeddings are not exact, when they are not.
    pub fn inexact_reason(&self) -> Option<&str> {
        self.inexact.as_deref()
    }

    /// Frames of a lone window that differ from the same frames computed inside a longer
    /// stream (their receptive field reaches into zero padding). None for unpadded
    /// convolutions.
    pub fn edge_frames(&self) -> usize {
        self.edge_frames
    }

    /// The shape of the backbone's frames.
    pub fn layout(&self) -> &FrameLayout {
        &self.layout
    }

    /// The backbone's frames per hop and per window.
    pub fn frames(&self) -> (usize, usize) {
        (self.frames_per_hop, self.layout.frames_per_window)
    }

    /// How many samples the window of an embedding ends before the newest sample pushed:
    /// the look-ahead of padded convolutions (none for unpadded ones).
    pub fn delay_samples(&self) -> usize {
        self.lag
    }

    /// The time of each node of the pulsed backbone, one hop at a time over `samples`
    /// (raw, `channels * hop` values per hop, channel-major, each hop normalised by its own
    /// statistics), averaged over `runs` hops. The stream is reset afterwards.
    pub fn profile(&mut self, samples: &[f32], runs: usize) -> Result<Vec<crate::profile::NodeTime>> {
        let (channels, hop) = (self.meta.channels, self.hop);
        let hops: Vec<Vec<f32>> = samples
            .chunks_exact(channels * hop)
            .map(|h| {
                let mut h = h.to_vec();
                h.chunks_exact_mut(hop).for_each(|c| self.meta.normalisation.apply(c));
                h
            })
            .collect();
        if hops.is_empty() {
            return Err(RuntimeError::StreamMismatch(format!(
                "profiling needs at least one hop of {channels} x {hop} samples"
            )));
        }
        let mut times = Vec::new();
        if let Some(front) = &self.front {
            times.push(crate::profile::time_patchify(front, &hops[0], runs)?);
        }
        let inputs = hops
            .iter()
            .map(|h| plan_input(self.front.as_ref(), channels, h, &mut self.front_frames))
            .collect::<Result<Vec<_>>>()?;
        let mut next = 0;
        let plan_times = crate::profile::profile_state(&mut self.state, runs, || {
            next = (next + 1) % inputs.len();
            Ok(inputs[next].clone())
        });
        self.reset()?;
        times.extend(plan_times?);
        Ok(times)
    }

    /// Forgets the stream: the next embedding needs a whole window of samples again.
    pub fn reset(&mut self) -> Result<()> {
        self.state = self.plan.spawn()?;
        self.to_skip = self.delay_frames;
        self.frames.clear();
        self.history.iter_mut().for_each(VecDeque::clear);
        self.stats = SlidingStats::new(self.meta.channels, self.meta.window);
        self.last_window = None;
        Ok(())
    }

    /// The embedding of window `index` of a stream windowed at this streamer's hop
    /// (`channels * window` raw samples, channel-major). When the window follows the
    /// last one embedded, only its newest hop goes through the backbone; otherwise the
    /// stream restarts from this window.
    pub fn embed_window(&mut self, samples: &[f32], index: u64) -> Result<Vec<f32>> {
        let (channels, window, hop) = (self.meta.channels, self.meta.window, self.hop);
        if samples.len() != channels * window {
            return Err(RuntimeError::StreamMismatch(format!(
                "window has {} values, the model takes {channels} channels x {window} samples",
                samples.len()
            )));
        }
        if self.lag != 0 || !window.is_multiple_of(hop) {
            return Err(not_streamable("its windows do not end on the newest hop (padded convolutions, or a hop that does not divide the window)"));
        }
        let follows = self.last_window.is_some_and(|last| last.checked_add(1) == Some(index));
        let first_hop = if follows {
            window / hop - 1
        } else {
            self.reset()?;
            // A (re)started stream normalises its first window whole, as a lone window is.
            for c in 0..channels {
                self.stats.push(c, &samples[c * window..(c + 1) * window]);
            }
            0
        };
        let mut hop_samples = Vec::with_capacity(channels * hop);
        for h in first_hop..window / hop {
            hop_samples.clear();
            for c in 0..channels {
                hop_samples.extend_from_slice(&samples[c * window + h * hop..c * window + (h + 1) * hop]);
            }
            self.advance(&hop_samples, false, follows)?;
        }
        self.last_window = Some(index);
        let scale = if self.raw { window_scale(&self.meta, &samples[..window]) } else { 1.0 };
        self.frames
            .embedding(scale)
            .ok_or_else(|| not_streamable("a whole window did not fill the backbone's frames"))
    }

    /// Pushes one hop of raw samples (`channels * hop` values, channel-major). Returns the
    /// embedding of the window that ends `delay_samples()` before the newest sample, once
    /// a whole window of frames has come out.
    pub fn push(&mut self, hop_samples: &[f32]) -> Result<Option<Vec<f32>>> {
        self.advance(hop_samples, true, true)?;
        // Exact mode ran the raw stream: divide by the scale the model's normalisation
        // gives the window the frames cover (one scale: one channel, or a fixed one).
        let scale = if self.raw {
            let history = self.history[0].make_contiguous();
            window_scale(&self.meta, &history[..self.meta.window.min(history.len())])
        } else {
            1.0
        };
        Ok(self.frames.embedding(scale))
    }

    /// Runs one hop through the backbone and keeps its frames; `keep_history` keeps the
    /// raw samples [`StreamingEmbedder::push`] scales by, `update_stats` adds the hop to
    /// the statistics it is normalised by (already there when a window was added whole).
    fn advance(&mut self, hop_samples: &[f32], keep_history: bool, update_stats: bool) -> Result<()> {
        let (channels, hop) = (self.meta.channels, self.hop);
        if hop_samples.len() != channels * hop {
            return Err(RuntimeError::StreamMismatch(format!(
                "a hop has {} values; the streamer takes {channels} channels x {hop} samples",
                hop_samples.len()
            )));
        }
        self.input.clear();
        self.input.extend_from_slice(hop_samples);
        let keep = self.meta.window + self.delay_samples();
        for (c, channel) in self.input.chunks_exact_mut(hop).enumerate() {
            if !self.raw {
                if update_stats {
                    self.stats.push(c, channel);
                }
                normalise(&self.meta, &self.stats, c, channel);
            } else if keep_history {
                let history = &mut self.history[c];
                history.extend(channel.iter().copied());
                let excess = history.len().saturating_sub(keep);
                history.drain(..excess);
            }
        }
        let input = plan_input(self.front.as_ref(), channels, &self.input, &mut self.front_frames)?;
        let out = self.state.run(tvec!(input.into()))?;
        let frames = out[0].to_plain_array_view::<f32>()?;
        let frames =
            frames.as_slice().ok_or_else(|| not_streamable("tract returned non-contiguous frames"))?;
        let frames = self.plan_layout.channel_major(frames, self.frames.channels, &mut self.scratch);
        for t in 0..self.frames_per_hop {
            if self.to_skip > 0 {
                self.to_skip -= 1;
            } else {
                self.frames.push(frames, self.frames_per_hop, t);
            }
        }
        Ok(())
    }
}

/// The divisor the model's normalisation gives one channel of a window.
pub fn window_scale(meta: &ModelMetadata, channel: &[f32]) -> f32 {
    let scale = match meta.normalisation.scaling {
        Scaling::Fixed(s) => s,
        Scaling::WindowRms { floor } => {
            let mean = vigil_core::dsp::mean(channel);
            let ms =
                channel.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / channel.len().max(1) as f32;
            ms.sqrt().max(floor)
        }
    };
    if scale != 0.0 && scale.is_finite() {
        scale
    } else {
        1.0
    }
}

/// The graph cut at its frames, for an input of `len` samples.
fn typed_window(model: &VigilModel, cut: &FrameCut, meta: &ModelMetadata, len: usize) -> Result<TypedModel> {
    let mut graph = tract_onnx::onnx().model_for_proto_model(model.proto())?;
    graph.select_outputs_by_name([cut.frames_node.as_str()])?;
    Ok(graph.with_input_fact(0, f32::fact([1, meta.channels, len]).into())?.into_typed()?)
}

/// Feature channels and frames the backbone gives for `len` input samples.
fn frames_shape(
    model: &VigilModel,
    cut: &FrameCut,
    meta: &ModelMetadata,
    len: usize,
) -> Result<(usize, usize)> {
    let typed = typed_window(model, cut, meta, len)?;
    match typed.output_fact(0)?.shape.as_concrete() {
        Some(&[1, channels, frames]) if frames > 0 => Ok((channels, frames)),
        _ => Err(not_streamable("its frames are not a [1, channels, frames] tensor")),
    }
}

/// A deterministic test signal of `n` samples: noise plus a slow tone.
fn probe_signal(n: usize, seed: u32) -> Vec<f32> {
    let mut state = seed;
    (0..n)
        .map(|i| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5 + 0.3 * (i as f32 * 0.05).sin()
        })
        .collect()
}

fn run_frames(plan: &Arc<TypedRunnableModel>, channels: usize, input: &[f32]) -> Result<Vec<f32>> {
    let t = Tensor::from_shape(&[1, channels, input.len() / channels], input)?;
    let out = plan.run(tvec!(t.into()))?;
    Ok(out[0].to_plain_array_view::<f32>()?.iter().copied().collect())
}

/// Counts the frames of a lone window that differ from the same frames computed with a
/// window of real samples on either side.
fn edge_frames(model: &VigilModel, cut: &FrameCut, meta: &ModelMetadata) -> Result<usize> {
    let (c, w) = (meta.channels, meta.window);
    let alone = optimise(typed_window(model, cut, meta, w)?)?;
    let within = optimise(typed_window(model, cut, meta, 3 * w)?)?;
    let long = probe_signal(3 * w * c, 7);
    // The middle window of each channel.
    let middle: Vec<f32> = long.chunks_exact(3 * w).flat_map(|ch| ch[w..2 * w].iter().copied()).collect();
    let (a, b) = (run_frames(&alone, c, &middle)?, run_frames(&within, c, &long)?);
    let (channels, frames) = frames_shape(model, cut, meta, w)?;
    let (_, long_frames) = frames_shape(model, cut, meta, 3 * w)?;
    let offset = (long_frames - frames) / 2;
    let size = a.iter().map(|v| v.abs()).fold(0.0f32, f32::max).max(1e-12);
    let differs = |t: usize| {
        (0..channels).any(|ch| (a[ch * frames + t] - b[ch * long_frames + offset + t]).abs() > 1e-4 * size)
    };
    Ok((0..frames).filter(|&t| differs(t)).count())
}

/// Whether the frames of `3 x + 0.7` are 3 times those of `x`, for a test window `x`:
/// the backbone ignores each channel's mean and scales with the input.
fn is_homogeneous(typed: TypedModel, meta: &ModelMetadata) -> Result<bool> {
    let plan = optimise(typed)?;
    let x = probe_signal(meta.channels * meta.window, 0x2545_f491);
    let moved: Vec<f32> = x.iter().map(|v| 3.0 * v + 0.7).collect();
    let (a, b) = (run_frames(&plan, meta.channels, &x)?, run_frames(&plan, meta.channels, &moved)?);
    let size = a.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
    let worst = a.iter().zip(&b).map(|(a, b)| (3.0 * a - b).abs()).fold(0.0f32, f32::max);
    Ok(size > 0.0 && worst <= 1e-4 * 3.0 * size)
}

/// Normalises one hop of one channel with the statistics of the window it completes.
fn normalise(meta: &ModelMetadata, stats: &SlidingStats, channel: usize, samples: &mut [f32]) {
    let (mean, rms) = stats.mean_rms(channel);
    let norm = meta.normalisation;
    let centre = match norm.centre {
        Centre::None => 0.0,
        Centre::WindowMean => mean,
    };
    let scale = match norm.scaling {
        Scaling::Fixed(s) => s,
        Scaling::WindowRms { floor } => rms.max(floor),
    };
    let inv = if scale != 0.0 && scale.is_finite() { 1.0 / scale } else { 1.0 };
    for x in samples {
        *x = (*x - centre) * inv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The running statistics equal those of the last `window` samples computed afresh,
    /// for blocks that fill, wrap and overrun the ring.
    #[test]
    fn sliding_statistics_follow_the_last_window() {
        let window = 10;
        let mut stats = SlidingStats::new(1, window);
        let mut all: Vec<f32> = Vec::new();
        let mut x = 0.3f32;
        for block in [3usize, 4, 2, 7, 1, 10, 13, 5, 9, 6, 4] {
            let b: Vec<f32> = (0..block)
                .map(|_| {
                    x = (x * 3.7 + 0.11).fract();
                    10.0 + 2.0 * x
                })
                .collect();
            stats.push(0, &b);
            all.extend(&b);
            let last = &all[all.len().saturating_sub(window)..];
            let mean = last.iter().map(|&v| f64::from(v)).sum::<f64>() / last.len() as f64;
            let var = last.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / last.len() as f64;
            let (m, r) = stats.mean_rms(0);
            assert!(
                (f64::from(m) - mean).abs() < 1e-5,
                "after {} samples: mean {m} against {mean}",
                all.len()
            );
            assert!(
                (f64::from(r) - var.sqrt()).abs() < 1e-4,
                "after {} samples: rms {r} against {}",
                all.len(),
                var.sqrt()
            );
        }
    }
}
