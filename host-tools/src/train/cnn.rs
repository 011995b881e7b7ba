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
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackboneSpec {
    /// Convolutions, each followed by its activation.
    pub convs: Vec<ConvSpec>,
    /// How the last convolution's frames are pooled into the embedding.
    pub pooling: Pooling,
    /// No biases, scale-only batch normalisation and zero-sum first kernels: the frames
    /// ignore an input's mean and scale with its amplitude.
    pub homogeneous: bool,
}

/// Global pooling over time: the runtime's, which pools streamed frames the same way.
pub use vigil_runtime::streaming::Pooling;

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
        }
    }

    /// Embedding dimension (output channels of the last convolution).
    pub fn embedding_dim(&self) -> usize {
        self.pooling.width(self.convs.last().map_or(0, |c| c.out_ch))
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

/// A parameter by ONNX initializer name, with its shape and values.
pub type NamedWeight = (String, Vec<usize>, Vec<f32>);

/// Trainable parameters of the CNN.
#[derive(Debug)]
pub struct Cnn {
    /// Layer shapes.
    pub spec: BackboneSpec,
    convs: Vec<(Var, Var)>,
    norms: Vec<BatchNorm>,
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
            norms.push(BatchNorm {
                gamma: Var::ones(c.out_ch, DType::F32, dev)?,
                beta: Var::zeros(c.out_ch, DType::F32, dev)?,
                running_mean: RefCell::new(Tensor::zeros(c.out_ch, DType::F32, dev)?),
                running_var: RefCell::new(Tensor::ones(c.out_ch, DType::F32, dev)?),
            });
        }
        let d = spec.embedding_dim();
        let head_w = kaiming(rng, &[classes, d], d, dev)?;
        let head_b = Var::zeros(classes, DType::F32, dev)?;
        Ok(Cnn { spec, convs, norms, head_w, head_b })
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
        for bn in &self.norms {
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

    fn forward_with(&self, x: &Tensor, momentum: Option<f64>) -> Result<(Tensor, Tensor)> {
        let mut h = x.clone();
        let homogeneous = self.spec.homogeneous;
        for (i, ((spec, (w, b)), bn)) in self.spec.convs.iter().zip(&self.convs).zip(&self.norms).enumerate()
        {
            let col = |t: &Tensor| t.reshape((1, spec.out_ch, 1));
            let weight = if homogeneous && i == 0 { zero_sum(w.as_tensor())? } else { w.as_tensor().clone() };
            h = h.conv1d(&weight, spec.padding, spec.stride, spec.dilation, 1)?;
            h = h.broadcast_add(&col(b.as_tensor())?)?;
            let (mean, var) = if let Some(m) = momentum {
                // Scale-only normalisation keeps the layer homogeneous: the "variance" is
                // the mean square about zero and nothing is subtracted.
                let mean = if homogeneous {
                    h.mean_keepdim(2)?.mean_keepdim(0)?.zeros_like()?
                } else {
                    h.mean_keepdim(2)?.mean_keepdim(0)?
                };
                let centred = h.broadcast_sub(&mean)?;
                let var = centred.sqr()?.mean_keepdim(2)?.mean_keepdim(0)?;
                let rm = (bn.running_mean.borrow().affine(1.0 - m, 0.0)?
                    + mean.flatten_all()?.detach().affine(m, 0.0)?)?;
                let rv = (bn.running_var.borrow().affine(1.0 - m, 0.0)?
                    + var.flatten_all()?.detach().affine(m, 0.0)?)?;
                *bn.running_mean.borrow_mut() = rm;
                *bn.running_var.borrow_mut() = rv;
                (mean, var)
            } else {
                (col(&bn.running_mean.borrow())?, col(&bn.running_var.borrow())?)
            };
            let inv_std = (var + BN_EPS)?.sqrt()?.recip()?;
            h = h.broadcast_sub(&mean)?.broadcast_mul(&inv_std)?;
            h = h.broadcast_mul(&col(bn.gamma.as_tensor())?)?.broadcast_add(&col(bn.beta.as_tensor())?)?;
            h = spec.activation.apply(&h)?;
        }
        let embedding = match self.spec.pooling {
            Pooling::Mean => h.mean(D::Minus1)?,
            Pooling::MeanMax => Tensor::cat(&[h.mean(D::Minus1)?, h.max(D::Minus1)?], 1)?,
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
            let gamma = bn.gamma.as_tensor().to_vec1::<f32>()?;
            let beta = bn.beta.as_tensor().to_vec1::<f32>()?;
            let mean = bn.running_mean.borrow().to_vec1::<f32>()?;
            let var = bn.running_var.borrow().to_vec1::<f32>()?;
            let per_out = vw.len() / vb.len();
            for o in 0..vb.len() {
                let k = gamma[o] / (var[o] + BN_EPS as f32).sqrt();
                vw[o * per_out..(o + 1) * per_out].iter_mut().for_each(|v| *v *= k);
                vb[o] = (vb[o] - mean[o]) * k + beta[o];
            }
            out.push((format!("conv{}.weight", i + 1), dw, vw));
            out.push((format!("conv{}.bias", i + 1), db, vb));
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
        for bn in &self.norms {
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
        for (bn, pair) in self.norms.iter().zip(snapshot[vars.len()..].chunks(2)) {
            *bn.running_mean.borrow_mut() = pair[0].clone();
            *bn.running_var.borrow_mut() = pair[1].clone();
        }
        Ok(())
    }
}
