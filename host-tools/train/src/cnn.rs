//! The reference 1D-CNN, as trained with candle.
//!
//! Shaped for tract and for streams (see DESIGN.md): a strided "patchify" first
//! convolution (k16, stride 16) instead of a narrow 1-channel kernel, k3 convolutions that
//! downsample by stride rather than MaxPool, two dilated k3 convolutions that widen the
//! receptive field, then global pooling (the embedding) and a dense head, both of which
//! the runtime computes outside the backbone.
//!
//! The streamable variant's convolutions are unpadded, so every frame of a window sees
//! only samples of that window and a stream can reuse a frame from one window to the next
//! (`vigil_runtime::streaming`). A *homogeneous* backbone goes further: its first kernels
//! sum to zero (blind to a window's mean) and no layer has a bias (batch normalisation
//! scales but does not shift), so scaling the input scales every frame, and normalising a
//! window by its mean and RMS is the same as dividing the pooled frames of the raw stream
//! by the window's RMS: streamed scores are then exact. It costs accuracy, so neither
//! shipped backbone is homogeneous (`vigil pretrain --homogeneous` trains one).

use candle_core::{DType, Device, Result, Tensor, Var, D};
use rand::Rng;
use std::cell::RefCell;

/// Epsilon of batch normalisation.
const BN_EPS: f64 = 1e-5;
/// Weight of the newest batch in the running statistics.
const BN_MOMENTUM: f64 = 0.1;

/// One convolution of the backbone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvSpec {
    /// Input channels.
    pub in_ch: usize,
    /// Output channels.
    pub out_ch: usize,
    /// Kernel size.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Dilation.
    pub dilation: usize,
    /// Zero padding on each side.
    pub padding: usize,
    /// What follows the convolution (after batch normalisation).
    pub activation: Activation,
}

/// The nonlinearity after a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Activation {
    /// max(x, 0).
    Relu,
    /// |x|: full-wave rectification. A patchify filter sees a structural resonance ringing
    /// at whatever phase the impact left it in; the magnitude of its response follows the
    /// ringing's envelope at any phase, where ReLU passes one half of it.
    Abs,
}

impl Activation {
    /// The ONNX operator.
    pub fn onnx_op(self) -> &'static str {
        match self {
            Activation::Relu => "Relu",
            Activation::Abs => "Abs",
        }
    }

    fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Relu => x.relu(),
            Activation::Abs => x.abs(),
        }
    }
}

/// The backbone's layers.
#[derive(Debug, Clone, PartialEq)]
pub struct BackboneSpec {
    /// Convolutions, each followed by its activation.
    pub convs: Vec<ConvSpec>,
    /// How the last convolution's frames are pooled into the embedding.
    pub pooling: Pooling,
    /// No biases, scale-only batch normalisation and zero-sum first kernels: the frames
    /// ignore an input's mean and scale with its amplitude.
    pub homogeneous: bool,
    /// Instead of pooling frames, take the spectrum of each channel over the window and
    /// embed it with a dense layer.
    pub spectrum: Option<SpectrumSpec>,
}

/// A spectral embedding: the last convolution's channels, read as envelopes over time,
/// go through a fixed Hann-windowed discrete Fourier transform; the amplitude of bins 1
/// to `frames / 2` of every channel, divided by the window's total (the amplitudes form
/// a unit vector), batch-normalised, goes through a dense layer and a ReLU to the
/// embedding. This is envelope analysis with learned bands: an impact train
/// shows as a line at its rate, the alternation of a ball striking both races as a line
/// at half that rate, and shaft-rate modulation as sidebands.
#[derive(Debug, Clone, PartialEq)]
pub struct SpectrumSpec {
    /// Frames of the last convolution over one window.
    pub frames: usize,
    /// Width of the embedding.
    pub width: usize,
    /// Dropout on the normalised spectrum while training (the dense layer holds
    /// most of the network's parameters).
    pub dropout: f32,
}

impl SpectrumSpec {
    /// Frequency bins per channel (1 to `frames / 2`; the mean, bin 0, is left out).
    pub fn bins(&self) -> usize {
        self.frames / 2
    }
}

/// The fixed transform of a [`SpectrumSpec`]: two `[frames, bins]` matrices, row-major,
/// whose products with a channel's frames give the real and imaginary parts of bins 1 to
/// `frames / 2` of its Hann-windowed, mean-removed transform, scaled so that a sinusoid
/// of amplitude 1 at a bin's frequency has magnitude about 1. The mean removal is folded
/// into the matrices (each column sums to zero), so the graph needs only two products.
pub fn spectrum_basis(frames: usize) -> (Vec<f32>, Vec<f32>) {
    use std::f64::consts::PI;
    let bins = frames / 2;
    let hann: Vec<f64> =
        (0..frames).map(|t| 0.5 - 0.5 * (2.0 * PI * t as f64 / (frames.max(2) - 1) as f64).cos()).collect();
    let scale = 2.0 / hann.iter().sum::<f64>().max(f64::MIN_POSITIVE);
    let column = |k: usize, f: fn(f64) -> f64| -> Vec<f64> {
        let raw: Vec<f64> =
            (0..frames).map(|t| scale * hann[t] * f(2.0 * PI * (k * t) as f64 / frames as f64)).collect();
        let mean = raw.iter().sum::<f64>() / frames as f64;
        raw.iter().map(|v| v - mean).collect()
    };
    let mut cos = vec![0.0f32; frames * bins];
    let mut sin = vec![0.0f32; frames * bins];
    for k in 1..=bins {
        for (t, (c, s)) in column(k, f64::cos).iter().zip(column(k, f64::sin)).enumerate() {
            cos[t * bins + k - 1] = *c as f32;
            sin[t * bins + k - 1] = s as f32;
        }
    }
    (cos, sin)
}

/// Floor added to each bin's spectral power before it is divided by the window's total:
/// it keeps the square root's gradient finite and a silent window's spectrum flat.
pub const SPECTRUM_FLOOR: f32 = 1e-4;

/// Global pooling over time: the runtime's, which pools streamed frames the same way.
pub use vigil_runtime::pooling::Pooling;

impl BackboneSpec {
    /// The reference backbone of bearing-cnn-v1 for `channels` input channels: padded
    /// convolutions (16 frames from 2,048 samples), receptive field 1,808 samples.
    pub fn reference(channels: usize) -> Self {
        Self::with_padding(channels, true)
    }

    /// The streamable backbone of bearing-cnn-v2: the same layers unpadded, so no frame
    /// reaches past a window's edge and a stream can reuse frames (10 frames from 3,072
    /// samples, receptive field 1,808 samples).
    pub fn streamable(channels: usize) -> Self {
        Self::with_padding(channels, false)
    }

    /// The spectral backbone of bearing-cnn-v3 over `window` samples: a patchify layer
    /// rectified by |x| (64 filters; the magnitude of each follows the envelope of the
    /// band it passes), a k3 convolution mixing them into 16 envelope channels at 1 ms,
    /// and the spectral embedding of [`SpectrumSpec`], 128 wide.
    pub fn spectral(channels: usize, window: usize) -> Self {
        let c = |in_ch, out_ch, kernel, stride, padding, activation| ConvSpec {
            in_ch,
            out_ch,
            kernel,
            stride,
            dilation: 1,
            padding,
            activation,
        };
        BackboneSpec {
            convs: vec![c(channels, 64, 16, 16, 0, Activation::Abs), c(64, 16, 3, 1, 1, Activation::Relu)],
            pooling: Pooling::Mean,
            homogeneous: false,
            spectrum: Some(SpectrumSpec { frames: window / 16, width: 128, dropout: 0.5 }),
        }
    }

    fn with_padding(channels: usize, padded: bool) -> Self {
        let c = |in_ch, out_ch, kernel, stride, dilation| ConvSpec {
            in_ch,
            out_ch,
            kernel,
            stride,
            dilation,
            padding: if padded && kernel == 3 { dilation } else { 0 },
            activation: Activation::Relu,
        };
        BackboneSpec {
            convs: vec![
                c(channels, 64, 16, 16, 1),
                c(64, 64, 3, 1, 1),
                c(64, 64, 3, 2, 1),
                c(64, 64, 3, 2, 1),
                c(64, 96, 3, 2, 1),
                c(96, 96, 3, 1, 2),
                c(96, 96, 3, 1, 4),
            ],
            pooling: Pooling::MeanMax,
            homogeneous: false,
            spectrum: None,
        }
    }

    /// A small backbone for quick tests.
    pub fn tiny(channels: usize) -> Self {
        let c = |in_ch, out_ch, kernel, stride| ConvSpec {
            in_ch,
            out_ch,
            kernel,
            stride,
            dilation: 1,
            padding: if kernel == 3 { 1 } else { 0 },
            activation: Activation::Relu,
        };
        BackboneSpec {
            convs: vec![c(channels, 16, 16, 16), c(16, 16, 3, 2), c(16, 16, 3, 2)],
            pooling: Pooling::Mean,
            homogeneous: false,
            spectrum: None,
        }
    }

    /// Embedding dimension (pooled channels of the last convolution, or the spectral
    /// embedding's width).
    pub fn embedding_dim(&self) -> usize {
        match &self.spectrum {
            Some(s) => s.width,
            None => self.pooling.width(self.last_channels()),
        }
    }

    /// Output channels of the last convolution.
    pub fn last_channels(&self) -> usize {
        self.convs.last().map_or(0, |c| c.out_ch)
    }
}

/// Each kernel minus its mean, so it sums to zero over time for every input channel:
/// the convolution is blind to each channel's mean.
fn zero_sum(w: &Tensor) -> Result<Tensor> {
    w.broadcast_sub(&w.mean_keepdim(2)?)
}

/// Batch normalisation after a convolution: trained with batch statistics, folded into
/// the convolution's weights at export so the deployed graph is plain Conv + activation.
#[derive(Debug)]
struct BatchNorm {
    gamma: Var,
    beta: Var,
    running_mean: RefCell<Tensor>,
    running_var: RefCell<Tensor>,
}

impl BatchNorm {
    fn new(features: usize, dev: &Device) -> Result<Self> {
        Ok(BatchNorm {
            gamma: Var::ones(features, DType::F32, dev)?,
            beta: Var::zeros(features, DType::F32, dev)?,
            running_mean: RefCell::new(Tensor::zeros(features, DType::F32, dev)?),
            running_var: RefCell::new(Tensor::zeros(features, DType::F32, dev)?.ones_like()?),
        })
    }

    /// Normalises each feature (axis 1) of `h`, `[B, F, T]` or `[B, F]`: with the batch's
    /// statistics (over batch and time), updating the running ones by `momentum`, or with
    /// the running ones. `scale_only` neither estimates nor subtracts a mean.
    fn apply(&self, h: &Tensor, momentum: Option<f64>, scale_only: bool) -> Result<Tensor> {
        let framed = h.rank() == 3;
        let per_feature = |t: &Tensor| if framed { t.reshape((1, (), 1)) } else { t.reshape((1, ())) };
        let batch_mean = |t: &Tensor| -> Result<Tensor> {
            let m = if framed { t.mean_keepdim(2)? } else { t.clone() };
            m.mean_keepdim(0)
        };
        let (mean, var) = if let Some(m) = momentum {
            // Scale-only normalisation keeps the layer homogeneous: the "variance" is
            // the mean square about zero and nothing is subtracted.
            let mean = if scale_only { batch_mean(h)?.zeros_like()? } else { batch_mean(h)? };
            let var = batch_mean(&h.broadcast_sub(&mean)?.sqr()?)?;
            let rm = (self.running_mean.borrow().affine(1.0 - m, 0.0)?
                + mean.flatten_all()?.detach().affine(m, 0.0)?)?;
            let rv = (self.running_var.borrow().affine(1.0 - m, 0.0)?
                + var.flatten_all()?.detach().affine(m, 0.0)?)?;
            *self.running_mean.borrow_mut() = rm;
            *self.running_var.borrow_mut() = rv;
            (mean, var)
        } else {
            (per_feature(&self.running_mean.borrow())?, per_feature(&self.running_var.borrow())?)
        };
        let inv_std = (var + BN_EPS)?.sqrt()?.recip()?;
        let h = h.broadcast_sub(&mean)?.broadcast_mul(&inv_std)?;
        h.broadcast_mul(&per_feature(self.gamma.as_tensor())?)?
            .broadcast_add(&per_feature(self.beta.as_tensor())?)
    }

    /// The per-feature factor and shift the running statistics apply:
    /// `y = k x + s` with `k = gamma / sqrt(var + eps)`, `s = beta - k mean`.
    fn folded(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        let gamma = self.gamma.as_tensor().to_vec1::<f32>()?;
        let beta = self.beta.as_tensor().to_vec1::<f32>()?;
        let mean = self.running_mean.borrow().to_vec1::<f32>()?;
        let var = self.running_var.borrow().to_vec1::<f32>()?;
        let k: Vec<f32> = gamma.iter().zip(&var).map(|(g, v)| g / (v + BN_EPS as f32).sqrt()).collect();
        let shift = beta.iter().zip(&k).zip(&mean).map(|((b, k), m)| b - k * m).collect();
        Ok((k, shift))
    }
}

/// The spectral embedding: the fixed transform (`[frames, bins]` each, built once), and
/// the trained normalisation of the spectrum and dense layer.
#[derive(Debug)]
struct SpectralEmbedding {
    cos: Tensor,
    sin: Tensor,
    norm: BatchNorm,
    weight: Var,
    bias: Var,
}

/// A parameter by ONNX initializer name, with its shape and values.
pub type NamedWeight = (String, Vec<usize>, Vec<f32>);

/// Trainable parameters of the CNN.
#[derive(Debug)]
pub struct Cnn {
    /// Layer shapes.
    pub spec: BackboneSpec,
    convs: Vec<(Var, Var)>,
    norms: Vec<BatchNorm>,
    spectral: Option<SpectralEmbedding>,
    head_w: Var,
    head_b: Var,
}

fn kaiming(rng: &mut impl Rng, shape: &[usize], fan_in: usize, dev: &Device) -> Result<Var> {
    let bound = (6.0 / fan_in as f64).sqrt() as f32;
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.gen_range(-bound..bound)).collect();
    Var::from_tensor(&Tensor::from_vec(v, shape, dev)?)
}

impl Cnn {
    /// Fresh weights (Kaiming-uniform), deterministic for the given RNG.
    pub fn new(spec: BackboneSpec, classes: usize, rng: &mut impl Rng, dev: &Device) -> Result<Self> {
        let mut convs = Vec::new();
        let mut norms = Vec::new();
        for c in &spec.convs {
            let w = kaiming(rng, &[c.out_ch, c.in_ch, c.kernel], c.in_ch * c.kernel, dev)?;
            let b = Var::zeros(c.out_ch, DType::F32, dev)?;
            convs.push((w, b));
            norms.push(BatchNorm::new(c.out_ch, dev)?);
        }
        let spectral = match &spec.spectrum {
            Some(sp) => {
                let features = spec.last_channels() * sp.bins();
                let (cos, sin) = spectrum_basis(sp.frames);
                Some(SpectralEmbedding {
                    cos: Tensor::from_vec(cos, (sp.frames, sp.bins()), dev)?,
                    sin: Tensor::from_vec(sin, (sp.frames, sp.bins()), dev)?,
                    norm: BatchNorm::new(features, dev)?,
                    weight: kaiming(rng, &[sp.width, features], features, dev)?,
                    bias: Var::zeros(sp.width, DType::F32, dev)?,
                })
            }
            None => None,
        };
        let d = spec.embedding_dim();
        let head_w = kaiming(rng, &[classes, d], d, dev)?;
        let head_b = Var::zeros(classes, DType::F32, dev)?;
        Ok(Cnn { spec, convs, norms, spectral, head_w, head_b })
    }

    /// All trainable variables (a homogeneous backbone trains no biases and no shifts).
    pub fn vars(&self) -> Vec<Var> {
        let shifts = !self.spec.homogeneous;
        let mut v: Vec<Var> = Vec::new();
        for ((w, b), n) in self.convs.iter().zip(&self.norms) {
            v.push(w.clone());
            v.push(n.gamma.clone());
            if shifts {
                v.extend([b.clone(), n.beta.clone()]);
            }
        }
        if let Some(sp) = &self.spectral {
            v.extend([sp.norm.gamma.clone(), sp.norm.beta.clone(), sp.weight.clone(), sp.bias.clone()]);
        }
        v.push(self.head_w.clone());
        v.push(self.head_b.clone());
        v
    }

    /// Embeddings `[B, D]` and logits `[B, K]` of a batch `[B, C, W]` of normalised
    /// windows. `train` normalises with batch statistics and updates the running ones;
    /// otherwise the running statistics are used, as in the exported graph.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        self.forward_with(x, if train { Some(BN_MOMENTUM) } else { None })
    }

    /// Re-estimates the batch-normalisation statistics as the average over `batches`
    /// (each `[B, C, W]`), so evaluation and export use stable statistics rather than
    /// those of the last few training batches.
    pub fn recalibrate(&self, batches: impl IntoIterator<Item = Tensor>) -> Result<()> {
        for bn in self.all_norms() {
            let n = bn.running_mean.borrow().dims1()?;
            let dev = bn.running_mean.borrow().device().clone();
            *bn.running_mean.borrow_mut() = Tensor::zeros(n, DType::F32, &dev)?;
            *bn.running_var.borrow_mut() = Tensor::zeros(n, DType::F32, &dev)?;
        }
        for (i, x) in batches.into_iter().enumerate() {
            // A cumulative average: the i-th batch weighs 1 / (i + 1).
            self.forward_with(&x, Some(1.0 / (i as f64 + 1.0)))?;
        }
        Ok(())
    }

    /// Every batch normalisation: the convolutions', then the spectral embedding's.
    fn all_norms(&self) -> impl Iterator<Item = &BatchNorm> {
        self.norms.iter().chain(self.spectral.as_ref().map(|s| &s.norm))
    }

    fn forward_with(&self, x: &Tensor, momentum: Option<f64>) -> Result<(Tensor, Tensor)> {
        let mut h = x.clone();
        let homogeneous = self.spec.homogeneous;
        for (i, ((spec, (w, b)), bn)) in self.spec.convs.iter().zip(&self.convs).zip(&self.norms).enumerate()
        {
            let weight = if homogeneous && i == 0 { zero_sum(w.as_tensor())? } else { w.as_tensor().clone() };
            h = h.conv1d(&weight, spec.padding, spec.stride, spec.dilation, 1)?;
            h = h.broadcast_add(&b.as_tensor().reshape((1, spec.out_ch, 1))?)?;
            h = bn.apply(&h, momentum, homogeneous)?;
            h = spec.activation.apply(&h)?;
        }
        let embedding = match (&self.spec.spectrum, &self.spectral) {
            (Some(sp), Some(layer)) => {
                let frames = h.dim(D::Minus1)?;
                if frames != sp.frames {
                    candle_core::bail!(
                        "the spectral embedding expects {} frames per window, the convolutions gave {frames}",
                        sp.frames
                    );
                }
                let re = h.broadcast_matmul(&layer.cos)?;
                let im = h.broadcast_matmul(&layer.sin)?;
                let power = ((re.sqr()? + im.sqr()?)?.flatten_from(1)? + f64::from(SPECTRUM_FLOOR))?;
                let amplitude = power.broadcast_div(&power.sum_keepdim(1)?)?.sqrt()?;
                let mut features = layer.norm.apply(&amplitude, momentum, false)?;
                if momentum.is_some() && sp.dropout > 0.0 {
                    features = candle_nn::ops::dropout(&features, sp.dropout)?;
                }
                features
                    .matmul(&layer.weight.as_tensor().t()?)?
                    .broadcast_add(layer.bias.as_tensor())?
                    .relu()?
            }
            _ => match self.spec.pooling {
                Pooling::Mean => h.mean(D::Minus1)?,
                Pooling::MeanMax => Tensor::cat(&[h.mean(D::Minus1)?, h.max(D::Minus1)?], 1)?,
            },
        };
        let logits =
            embedding.matmul(&self.head_w.as_tensor().t()?)?.broadcast_add(self.head_b.as_tensor())?;
        Ok((embedding, logits))
    }

    /// Parameters by ONNX initializer name, with shapes, as plain floats.
    pub fn named_weights(&self) -> Result<Vec<NamedWeight>> {
        let mut out = Vec::new();
        let flat = |v: &Var| -> Result<(Vec<usize>, Vec<f32>)> {
            Ok((v.dims().to_vec(), v.as_tensor().flatten_all()?.to_vec1::<f32>()?))
        };
        for (i, ((w, b), bn)) in self.convs.iter().zip(&self.norms).enumerate() {
            // Fold batch normalisation: y = gamma (conv(x) + b - mean) / sqrt(var + eps) + beta.
            let (dw, mut vw) = if self.spec.homogeneous && i == 0 {
                (w.dims().to_vec(), zero_sum(w.as_tensor())?.flatten_all()?.to_vec1::<f32>()?)
            } else {
                flat(w)?
            };
            let (db, mut vb) = flat(b)?;
            let (k, shift) = bn.folded()?;
            let per_out = vw.len() / vb.len();
            for o in 0..vb.len() {
                vw[o * per_out..(o + 1) * per_out].iter_mut().for_each(|v| *v *= k[o]);
                vb[o] = vb[o] * k[o] + shift[o];
            }
            out.push((format!("conv{}.weight", i + 1), dw, vw));
            out.push((format!("conv{}.bias", i + 1), db, vb));
        }
        if let Some(layer) = &self.spectral {
            // Fold the normalisation of the dense layer's input into it:
            // W (k x + s) + b = (W diag(k)) x + (W s + b).
            let (dw, mut vw) = flat(&layer.weight)?;
            let (db, mut vb) = flat(&layer.bias)?;
            let (k, shift) = layer.norm.folded()?;
            for (row, bias) in vw.chunks_exact_mut(k.len()).zip(vb.iter_mut()) {
                *bias += row.iter().zip(&shift).map(|(w, s)| w * s).sum::<f32>();
                row.iter_mut().zip(&k).for_each(|(w, k)| *w *= k);
            }
            out.push(("dense.weight".into(), dw, vw));
            out.push(("dense.bias".into(), db, vb));
        }
        let (dw, vw) = flat(&self.head_w)?;
        let (db, vb) = flat(&self.head_b)?;
        out.push(("head.weight".into(), dw, vw));
        out.push(("head.bias".into(), db, vb));
        Ok(out)
    }

    /// Copies the current values of all variables and running statistics (for keeping
    /// the best epoch).
    pub fn snapshot(&self) -> Result<Vec<Tensor>> {
        let mut s: Vec<Tensor> = self.vars().iter().map(|v| v.as_tensor().copy()).collect::<Result<_>>()?;
        for bn in self.all_norms() {
            s.push(bn.running_mean.borrow().copy()?);
            s.push(bn.running_var.borrow().copy()?);
        }
        Ok(s)
    }

    /// Restores values taken by [`Cnn::snapshot`].
    pub fn restore(&self, snapshot: &[Tensor]) -> Result<()> {
        let vars = self.vars();
        for (v, t) in vars.iter().zip(snapshot) {
            v.set(t)?;
        }
        for (bn, pair) in self.all_norms().zip(snapshot[vars.len()..].chunks(2)) {
            *bn.running_mean.borrow_mut() = pair[0].clone();
            *bn.running_var.borrow_mut() = pair[1].clone();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bin k of the basis measures a sinusoid of k cycles per window at magnitude about 1
    /// whatever its phase, leaves bins two or more away near zero (the Hann window's
    /// leakage), and ignores a constant (the folded mean removal).
    #[test]
    fn the_spectrum_basis_measures_each_bin_and_ignores_the_mean() {
        let frames = 128;
        let bins = frames / 2;
        let (cos, sin) = spectrum_basis(frames);
        assert_eq!((cos.len(), sin.len()), (frames * bins, frames * bins));
        let magnitudes = |x: &[f32]| -> Vec<f32> {
            (0..bins)
                .map(|k| {
                    let re: f32 = x.iter().enumerate().map(|(t, v)| v * cos[t * bins + k]).sum();
                    let im: f32 = x.iter().enumerate().map(|(t, v)| v * sin[t * bins + k]).sum();
                    (re * re + im * im).sqrt()
                })
                .collect()
        };
        for (k, phase) in [(5usize, 0.3f32), (20, 2.0), (40, -1.0)] {
            let x: Vec<f32> = (0..frames)
                .map(|t| 3.0 + (2.0 * std::f32::consts::PI * (k * t) as f32 / frames as f32 + phase).cos())
                .collect();
            let m = magnitudes(&x);
            assert!((m[k - 1] - 1.0).abs() < 0.02, "bin {k}: {}", m[k - 1]);
            for (j, v) in m.iter().enumerate() {
                if (j + 1).abs_diff(k) >= 2 {
                    assert!(*v < 0.02, "bin {} leaks {v} from a line at bin {k}", j + 1);
                }
            }
        }
        assert!(magnitudes(&[7.0; 128]).iter().all(|v| *v < 1e-4));
    }
}
