//! tract plans of a backbone: the graph cut at an output (the frames before its global
//! pooling, the embedding node or the logits), the patchify layer split off to run in
//! Rust ahead of tract, the rest turned channels-last where tract can, optimised; and
//! [`Embedder`], which runs a plan window after window.

use crate::error::{Result, RuntimeError};
use crate::metadata::ModelMetadata;
use crate::patchify::Patchify;
use crate::pooling::{pool, FrameCut, Pooling};
use std::sync::Arc;
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;

/// A runnable tract plan.
pub(crate) type Plan = Arc<TypedRunnableModel>;

/// The backbone cut at its frames with the pooling the runtime then does, when the graph
/// pools the way [`FrameCut::find`] knows into `dim` values; otherwise cut at the
/// embedding node. The plan takes `batch` windows at once.
pub(crate) fn backbone_plan(
    proto: &ModelProto,
    meta: &ModelMetadata,
    dim: usize,
    batch: usize,
) -> Result<(Staged, Option<Pooling>)> {
    if let Ok(cut) = FrameCut::find(proto, meta) {
        let staged = build_plan(proto, meta, &cut.frames_node, batch)?;
        let shape = staged.plan.model().output_fact(0)?.shape.as_concrete().map(<[usize]>::to_vec);
        if let Some((_, channels, frames)) = shape.and_then(|s| staged.layout.batch_channels_frames(&s)) {
            if frames > 0 && cut.pooling.width(channels) == dim {
                return Ok((staged, Some(cut.pooling)));
            }
        }
    }
    Ok((build_plan(proto, meta, &meta.embedding_node, batch)?, None))
}

/// How a plan's `[batch, a, b]` tensors are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// `[1, channels, time]`, as the ONNX graph is written.
    ChannelMajor,
    /// `[1, time, channels]`.
    TimeMajor,
}

impl Layout {
    /// Windows, channels and time steps of a `[batch, a, b]` shape.
    pub(crate) fn batch_channels_frames(self, shape: &[usize]) -> Option<(usize, usize, usize)> {
        match (self, shape) {
            (Layout::ChannelMajor, &[b, c, t]) => Some((b, c, t)),
            (Layout::TimeMajor, &[b, t, c]) => Some((b, c, t)),
            _ => None,
        }
    }

    /// The axis of time.
    pub(crate) fn time_axis(self) -> usize {
        match self {
            Layout::ChannelMajor => 2,
            Layout::TimeMajor => 1,
        }
    }

    /// `values` (`[1, a, b]` in this layout, `channels` channels) channel-major: as they
    /// are, or transposed into `scratch`.
    pub(crate) fn channel_major<'a>(
        self,
        values: &'a [f32],
        channels: usize,
        scratch: &'a mut Vec<f32>,
    ) -> &'a [f32] {
        match self {
            Layout::ChannelMajor => values,
            Layout::TimeMajor => {
                let frames = values.len() / channels.max(1);
                scratch.clear();
                scratch
                    .extend((0..channels).flat_map(|c| (0..frames).map(move |t| values[t * channels + c])));
                scratch
            }
        }
    }
}

/// A tract plan, the patchify layer the runtime runs ahead of it (if any) and the
/// layout of its tensors.
#[derive(Debug, Clone)]
pub(crate) struct Staged {
    pub(crate) plan: Plan,
    pub(crate) front: Option<Patchify>,
    pub(crate) layout: Layout,
}

/// The backbone up to an output as tract gets it, typed and not yet optimised.
pub(crate) struct Backbone {
    pub(crate) model: TypedModel,
    /// The patchify layer split off the graph, which the runtime runs ahead of tract.
    pub(crate) front: Option<Patchify>,
    pub(crate) layout: Layout,
    /// The symbol of the input's length along time, when streamed.
    pub(crate) stream: Option<Symbol>,
}

impl Backbone {
    /// Input samples per step along the plan's time axis.
    pub(crate) fn samples_per_step(&self) -> usize {
        self.front.as_ref().map_or(1, Patchify::kernel)
    }
}

/// The graph up to `output` as tract gets it, for `batch` windows at once or
/// (`streamed`, one stream) a stream whose length is a symbol.
///
/// When the graph starts with a patchify layer ([`Patchify::split`]), the layer is split
/// off to run in Rust and tract gets the rest, time-major: its input is the layer's
/// frames `[1, frames, out channels]` (the order the Rust product writes them in) and
/// tract turns each convolution to the channels-last format. A pulsed plan then keeps each
/// convolution's context in one contiguous block instead of one short run per channel:
/// the six `Delay` buffers of bearing-cnn-v2 went from 5.4 to 2.1 µs a hop
/// (`vigil bench --profile`). Graphs tract cannot turn, and graphs without such a layer,
/// run as written.
pub(crate) fn backbone_graph(
    proto: &ModelProto,
    meta: &ModelMetadata,
    output: &str,
    streamed: bool,
    batch: usize,
) -> Result<Backbone> {
    let typed = |graph: &ModelProto, width: usize, per_step: usize| -> Result<(TypedModel, Option<Symbol>)> {
        let mut model = tract_onnx::onnx().model_for_proto_model(graph)?;
        model.select_outputs_by_name([output])?;
        let (len, stream) = if streamed {
            let s = model.symbols.sym("S");
            (s.to_dim(), Some(s))
        } else {
            ((meta.window / per_step).to_dim(), None)
        };
        let model = model.with_input_fact(0, f32::fact([batch.to_dim(), width.to_dim(), len]).into())?;
        Ok((model.into_typed()?, stream))
    };
    let split = Patchify::split(proto, &meta.input_name, meta.channels, output)
        .filter(|(p, _)| meta.window.is_multiple_of(p.kernel()));
    if let Some((front, rest)) = split {
        let (model, stream) = typed(&rest, front.out_channels(), front.kernel())?;
        if let Some(model) = time_major(model)? {
            return Ok(Backbone { model, front: Some(front), layout: Layout::TimeMajor, stream });
        }
    }
    let (model, stream) = typed(proto, meta.channels, 1)?;
    Ok(Backbone { model, front: None, layout: Layout::ChannelMajor, stream })
}

/// `model` with its `[1, channels, time]` input moved to `[1, time, channels]` and the
/// change carried through the graph (tract's axis-change propagation), or None when some
/// node cannot take it.
fn time_major(mut model: TypedModel) -> Result<Option<TypedModel>> {
    use tract_onnx::tract_core::ops::change_axes::{AxisChange, AxisOp};
    let change = AxisChange { outlet: model.input_outlets()?[0], op: AxisOp::Move(1, 2) };
    let patch = tract_onnx::tract_core::optim::change_axes::change_axes(
        &model,
        &change,
        &[],
        &[],
        &mut Default::default(),
    )?;
    let Some((patch, _)) = patch else { return Ok(None) };
    patch.apply(&mut model)?;
    Ok(Some(model))
}

/// The plan of `batch` windows up to `output` ([`backbone_graph`]).
pub(crate) fn build_plan(
    proto: &ModelProto,
    meta: &ModelMetadata,
    output: &str,
    batch: usize,
) -> Result<Staged> {
    let backbone = backbone_graph(proto, meta, output, false, batch)?;
    Ok(Staged { plan: optimise(backbone.model)?, front: backbone.front, layout: backbone.layout })
}

/// tract's knob choosing, per convolution, between copying the patches out (im2col)
/// and reading them in place as the matrix product packs them (lazy im2col).
const LAZY_IM2COL_KNOB: &str = "TRACT_LAZY_IM2COL_MIN_KERNEL";

/// Optimises `model` into a plan, with the k3 convolutions reading their patches in
/// place: tract copies them out for kernels under 6 taps by default, and on Vigil's
/// backbones reading in place measured 5% faster on a whole window and 11% faster on a
/// streamed hop (`vigil bench --profile`, bearing-cnn-v2, docs/performance.md). The
/// environment variable of the same name, when set, decides instead.
pub(crate) fn optimise(model: TypedModel) -> Result<Plan> {
    let run = || -> Result<Plan> { Ok(model.into_optimized()?.into_runnable()?) };
    if std::env::var_os(LAZY_IM2COL_KNOB).is_some() {
        return run();
    }
    tract_onnx::tract_core::knobs::KnobScope::new([(LAZY_IM2COL_KNOB, "3")])?.enter(run)
}

/// Runs one plan window after window (or batch after batch), reusing its state.
#[derive(Debug)]
pub struct Embedder {
    state: TypedSimpleState,
    front: Option<Patchify>,
    layout: Layout,
    /// The patchify layer's output for the plan.
    frames: Vec<f32>,
    /// The plan's output made channel-major.
    scratch: Vec<f32>,
    channels: usize,
    window: usize,
    /// Windows the plan takes at once.
    batch: usize,
    out_len: usize,
    pooling: Option<Pooling>,
}

impl Embedder {
    pub(crate) fn new(
        staged: &Staged,
        meta: &ModelMetadata,
        out_len: usize,
        pooling: Option<Pooling>,
        batch: usize,
    ) -> Result<Self> {
        Ok(Embedder {
            state: staged.plan.spawn()?,
            front: staged.front.clone(),
            layout: staged.layout,
            frames: Vec::new(),
            scratch: Vec::new(),
            channels: meta.channels,
            window: meta.window,
            batch,
            out_len,
            pooling,
        })
    }

    /// The time of each node of the backbone on `window` (normalised, as for
    /// [`Embedder::run`]), averaged over `runs` runs: the patchify layer run in Rust
    /// first, when there is one, then tract's plan.
    pub fn profile(&mut self, window: &[f32], runs: usize) -> Result<Vec<crate::profile::NodeTime>> {
        self.run(window)?;
        let mut times = Vec::new();
        if let Some(front) = &self.front {
            times.push(crate::profile::time_patchify(front, window, runs)?);
        }
        let input = self.input(window)?;
        times.extend(crate::profile::profile_state(&mut self.state, runs, || Ok(input.clone()))?);
        Ok(times)
    }

    /// Windows this embedder takes at once ([`Embedder::run_batch`]).
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Runs one normalised window (`channels * window` values, channel-major).
    pub fn run(&mut self, window: &[f32]) -> Result<Vec<f32>> {
        self.run_batch(window)
    }

    /// Runs [`Embedder::batch`] normalised windows in one call of the plan (each
    /// `channels * window` values, channel-major, one after the other) and returns their
    /// outputs one after the other.
    pub fn run_batch(&mut self, windows: &[f32]) -> Result<Vec<f32>> {
        let expected = self.batch * self.channels * self.window;
        if windows.len() != expected {
            return Err(RuntimeError::StreamMismatch(format!(
                "{} values given; the plan takes {} window(s) of {} channels x {} samples",
                windows.len(),
                self.batch,
                self.channels,
                self.window
            )));
        }
        let input = self.input(windows)?;
        let out = self.state.run(tvec!(input.into()))?;
        let view = out[0].to_plain_array_view::<f32>()?;
        let shape = self.layout.batch_channels_frames(view.shape()).filter(|&(b, _, _)| b == self.batch);
        let values = match (self.pooling, shape.zip(view.as_slice())) {
            (Some(pooling), Some(((batch, channels, _), frames))) => {
                let per_window = frames.len() / batch.max(1);
                let mut values = Vec::with_capacity(batch * self.out_len);
                for item in frames.chunks_exact(per_window.max(1)) {
                    values.extend(pool(
                        self.layout.channel_major(item, channels, &mut self.scratch),
                        channels,
                        pooling,
                    ));
                }
                values
            }
            _ => view.iter().copied().collect::<Vec<f32>>(),
        };
        if values.len() != self.batch * self.out_len {
            return Err(RuntimeError::StreamMismatch(format!(
                "the graph output has {} values, expected {} per window for {} window(s)",
                values.len(),
                self.out_len,
                self.batch
            )));
        }
        Ok(values)
    }

    /// The tensor the plan takes for `windows`: [`plan_input`] of each, stacked.
    fn input(&mut self, windows: &[f32]) -> Result<Tensor> {
        if self.batch == 1 {
            return plan_input(self.front.as_ref(), self.channels, windows, &mut self.frames);
        }
        let per_window = windows.len() / self.batch;
        let Some(front) = &self.front else {
            return Ok(Tensor::from_shape(
                &[self.batch, self.channels, per_window / self.channels.max(1)],
                windows,
            )?);
        };
        let mut all = Vec::with_capacity(self.batch * per_window);
        let mut frames = 0;
        for window in windows.chunks_exact(per_window.max(1)) {
            frames = front.run(window, &mut self.frames)?;
            all.extend_from_slice(&self.frames);
        }
        Ok(Tensor::from_shape(&[self.batch, frames, front.out_channels()], &all)?)
    }
}

/// The tensor a plan takes for `input` (`channels` channels of samples, channel-major):
/// the patchify layer's time-major frames `[1, frames, out]` (computed into `frames`)
/// when the plan has one ahead of it, otherwise the samples as `[1, channels, samples]`.
pub(crate) fn plan_input(
    front: Option<&Patchify>,
    channels: usize,
    input: &[f32],
    frames: &mut Vec<f32>,
) -> Result<Tensor> {
    Ok(match front {
        Some(front) => {
            let n = front.run(input, frames)?;
            Tensor::from_shape(&[1, n, front.out_channels()], frames)?
        }
        None => Tensor::from_shape(&[1, channels, input.len() / channels.max(1)], input)?,
    })
}
