//! Training through an ONNX graph with candle: the graph's nodes are run in order as
//! candle operations, the chosen initialisers become trainable variables and the others
//! constants. What `vigil fine-tune --train last:K` and `--train all` train, and what the
//! from-scratch comparison starts from re-initialised.
//!
//! The operators of Vigil's backbones are supported: Conv (1-D, one group), Relu, Abs,
//! GlobalAveragePool, GlobalMaxPool, Concat, Flatten and Gemm, and for a spectral
//! backbone MatMul, Mul, Add, Div, Sqrt and Log; any other is refused by name. The spectral
//! transform's matrices are never trained.

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use tract_onnx::pb::{attribute_proto::AttributeType, ModelProto, NodeProto};
use vigil_runtime::onnx::{ints, read_initializer, replace_initializer};

/// The weight of `node` if it is a dense layer of the backbone: a Gemm other than the
/// head (whose weight is `head_weight`), as in a spectral backbone's embedding.
pub(crate) fn dense_weight<'a>(node: &'a NodeProto, head_weight: &str) -> Option<&'a String> {
    (node.op_type == "Gemm").then(|| node.input.get(1)).flatten().filter(|w| *w != head_weight)
}

/// What to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trainable {
    /// The last `k` layers with weights (convolutions, and a spectral backbone's dense
    /// layer) and the head.
    Last(usize),
    /// Every initialiser.
    All,
}

impl std::str::FromStr for Trainable {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "all" => Ok(Trainable::All),
            _ => match s.strip_prefix("last:").map(str::parse::<usize>) {
                Some(Ok(k)) if k > 0 => Ok(Trainable::Last(k)),
                _ => bail!("`{s}` is not head, last:K (K >= 1) or all"),
            },
        }
    }
}

/// An ONNX graph as candle operations.
#[derive(Debug)]
pub struct GraphModel {
    nodes: Vec<NodeProto>,
    input: String,
    output: String,
    /// Initialisers: name -> trainable variable or constant.
    params: HashMap<String, Param>,
    /// Names of the trainable initialisers of the backbone (lower learning rate).
    backbone: Vec<String>,
    /// Names of the trainable initialisers of the head.
    head: Vec<String>,
}

#[derive(Debug)]
enum Param {
    Trainable(Var),
    Fixed(Tensor),
}

impl Param {
    fn tensor(&self) -> &Tensor {
        match self {
            Param::Trainable(v) => v.as_tensor(),
            Param::Fixed(t) => t,
        }
    }
}

fn int(node: &NodeProto, name: &str) -> Option<i64> {
    node.attribute.iter().find(|a| a.name == name && a.r#type == AttributeType::Int as i32).map(|a| a.i)
}

impl GraphModel {
    /// The graph of `proto` up to `output`, training `what` (the head being the Gemm whose
    /// initialisers are `head_weight` and `head_bias`). With `reinitialise`, every
    /// trainable initialiser starts from random values (He-scaled for weights, zero for
    /// biases) drawn with `seed`.
    pub fn new(
        proto: &ModelProto,
        input: &str,
        output: &str,
        head: (&str, &str),
        what: Trainable,
        reinitialise: Option<u64>,
    ) -> Result<Self> {
        let graph = proto.graph.as_ref().ok_or_else(|| anyhow!("the model has no graph"))?;
        let mut nodes = Vec::new();
        for node in &graph.node {
            nodes.push(node.clone());
            if node.output.iter().any(|o| o == output) {
                break;
            }
        }
        // The backbone's layers with weights: its convolutions and, in a spectral
        // backbone, the dense layer of the embedding (a Gemm other than the head).
        let layers: Vec<&NodeProto> =
            nodes.iter().filter(|n| n.op_type == "Conv" || dense_weight(n, head.0).is_some()).collect();
        let trained_layers: Vec<&NodeProto> = match what {
            Trainable::All => layers.clone(),
            Trainable::Last(k) => {
                if k > layers.len() {
                    let convs = layers.iter().filter(|n| n.op_type == "Conv").count();
                    let dense = layers.len() - convs;
                    let and_dense =
                        if dense > 0 { format!(" and {dense} dense layer") } else { String::new() };
                    bail!("last:{k}: the backbone has {convs} convolutions{and_dense}");
                }
                layers[layers.len() - k..].to_vec()
            }
        };
        let backbone: Vec<String> =
            trained_layers.iter().flat_map(|n| n.input.iter().skip(1).cloned()).collect();
        let head_names = vec![head.0.to_owned(), head.1.to_owned()];
        let mut rng = ChaCha8Rng::seed_from_u64(reinitialise.unwrap_or(0));
        let mut params = HashMap::new();
        for init in &graph.initializer {
            let t = read_initializer(proto, &init.name)?;
            let trainable = backbone.contains(&init.name) || head_names.contains(&init.name);
            let values = match reinitialise {
                Some(_) if trainable && t.dims.len() > 1 => {
                    let fan_in: usize = t.dims[1..].iter().product();
                    let scale = (2.0 / fan_in.max(1) as f32).sqrt();
                    (0..t.values.len())
                        .map(|_| scale * (rng.gen::<f32>() * 2.0 - 1.0) * 3f32.sqrt())
                        .collect()
                }
                Some(_) if trainable => vec![0.0; t.values.len()],
                _ => t.values.clone(),
            };
            let tensor = Tensor::from_vec(values, t.dims.as_slice(), &Device::Cpu)?;
            let param =
                if trainable { Param::Trainable(Var::from_tensor(&tensor)?) } else { Param::Fixed(tensor) };
            params.insert(init.name.clone(), param);
        }
        Ok(GraphModel {
            nodes,
            input: input.to_owned(),
            output: output.to_owned(),
            params,
            backbone,
            head: head_names,
        })
    }

    /// Runs the graph on `x` (`[batch, channels, window]`, normalised).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut values = self.run(x)?;
        values.remove(self.output.as_str()).ok_or_else(|| anyhow!("the graph does not reach {}", self.output))
    }

    /// Every node output of the graph on `x`, by name (for calibrating activation ranges).
    pub fn activations(&self, x: &Tensor) -> Result<HashMap<String, Tensor>> {
        Ok(self.run(x)?.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }

    /// The nodes of the graph, in order.
    pub fn nodes(&self) -> &[NodeProto] {
        &self.nodes
    }

    fn run(&self, x: &Tensor) -> Result<HashMap<&str, Tensor>> {
        let mut values: HashMap<&str, Tensor> = HashMap::new();
        values.insert(self.input.as_str(), x.clone());
        for node in &self.nodes {
            let arg = |i: usize| -> Result<Tensor> {
                let name = node.input.get(i).ok_or_else(|| anyhow!("{} has no input {i}", node.name))?;
                match values.get(name.as_str()) {
                    Some(t) => Ok(t.clone()),
                    None => Ok(self
                        .params
                        .get(name)
                        .ok_or_else(|| anyhow!("unknown tensor {name}"))?
                        .tensor()
                        .clone()),
                }
            };
            let out = match node.op_type.as_str() {
                "Conv" => {
                    let one =
                        |name: &str| ints(node, name).and_then(|v| v.first().copied()).unwrap_or(1) as usize;
                    let pads = ints(node, "pads").unwrap_or_default();
                    if pads.len() == 2 && pads[0] != pads[1] {
                        bail!("{}: asymmetric padding is not supported for training", node.name);
                    }
                    if int(node, "group").unwrap_or(1) != 1 {
                        bail!("{}: grouped convolutions are not supported for training", node.name);
                    }
                    let pad = pads.first().copied().unwrap_or(0) as usize;
                    let y = arg(0)?.conv1d(&arg(1)?, pad, one("strides"), one("dilations"), 1)?;
                    match node.input.len() {
                        3 => y.broadcast_add(&arg(2)?.reshape((1, (), 1))?)?,
                        _ => y,
                    }
                }
                "Relu" => arg(0)?.relu()?,
                "Abs" => arg(0)?.abs()?,
                "Log" => arg(0)?.log()?,
                "Sqrt" => arg(0)?.sqrt()?,
                "MatMul" => arg(0)?.broadcast_matmul(&arg(1)?)?,
                "Mul" => arg(0)?.broadcast_mul(&arg(1)?)?,
                "Add" => arg(0)?.broadcast_add(&arg(1)?)?,
                "Div" => arg(0)?.broadcast_div(&arg(1)?)?,
                "GlobalAveragePool" => arg(0)?.mean_keepdim(D::Minus1)?,
                "GlobalMaxPool" => arg(0)?.max_keepdim(D::Minus1)?,
                "Concat" => {
                    let parts = (0..node.input.len()).map(arg).collect::<Result<Vec<_>>>()?;
                    Tensor::cat(&parts, int(node, "axis").unwrap_or(1) as usize)?
                }
                "Flatten" => arg(0)?.flatten_from(int(node, "axis").unwrap_or(1) as usize)?,
                "Gemm" => {
                    if int(node, "transB") != Some(1) || int(node, "transA").unwrap_or(0) != 0 {
                        bail!("{}: only Gemm with transB = 1 is supported for training", node.name);
                    }
                    arg(0)?.matmul(&arg(1)?.t()?)?.broadcast_add(&arg(2)?)?
                }
                other => bail!("operator {other} (node {}) is not supported for training", node.name),
            };
            let name = node.output.first().ok_or_else(|| anyhow!("{} has no output", node.name))?;
            values.insert(name.as_str(), out);
        }
        Ok(values)
    }

    fn vars(&self, names: &[String]) -> Vec<Var> {
        names
            .iter()
            .filter_map(|n| match self.params.get(n) {
                Some(Param::Trainable(v)) => Some(v.clone()),
                _ => None,
            })
            .collect()
    }

    /// Current values of the trainable initialisers.
    pub fn snapshot(&self) -> Result<Vec<(String, Vec<f32>)>> {
        self.backbone
            .iter()
            .chain(&self.head)
            .filter_map(|n| match self.params.get(n) {
                Some(Param::Trainable(v)) => Some((n, v)),
                _ => None,
            })
            .map(|(n, v)| Ok((n.clone(), v.as_tensor().flatten_all()?.to_vec1::<f32>()?)))
            .collect()
    }

    /// Sets trainable initialisers from a [`GraphModel::snapshot`].
    pub fn restore(&self, snapshot: &[(String, Vec<f32>)]) -> Result<()> {
        for (name, values) in snapshot {
            if let Some(Param::Trainable(v)) = self.params.get(name) {
                v.set(&Tensor::from_vec(values.clone(), v.as_tensor().dims(), &Device::Cpu)?)?;
            }
        }
        Ok(())
    }

    /// Writes the trainable initialisers into `proto`; returns the relative L2 change of
    /// each against what `proto` held.
    pub fn write_into(&self, proto: &mut ModelProto) -> Result<Vec<(String, f64)>> {
        let mut changes = Vec::new();
        for (name, values) in self.snapshot()? {
            let old = read_initializer(proto, &name)?.values;
            let diff: f64 = old.iter().zip(&values).map(|(a, b)| f64::from(a - b).powi(2)).sum();
            let norm: f64 = old.iter().map(|a| f64::from(*a).powi(2)).sum();
            changes.push((name.clone(), (diff / norm.max(f64::MIN_POSITIVE)).sqrt()));
            replace_initializer(proto, &name, &values).with_context(|| format!("writing {name}"))?;
        }
        Ok(changes)
    }
}

/// Settings of [`train`].
#[derive(Debug, Clone, Copy)]
pub struct GraphTraining {
    /// Passes over the training windows.
    pub epochs: usize,
    /// Learning rate of the head.
    pub lr: f64,
    /// Learning rate of the trained convolutions.
    pub backbone_lr: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Windows per step.
    pub batch: usize,
    /// Epochs without a better validation loss before stopping.
    pub patience: usize,
    /// Seed of the batch order.
    pub seed: u64,
}

/// Windows as a tensor `[n, channels, window]` and their labels.
pub fn batch_tensors(windows: &[Vec<f32>], labels: &[usize], channels: usize) -> Result<(Tensor, Tensor)> {
    let len = windows.first().map_or(0, Vec::len);
    let flat: Vec<f32> = windows.iter().flatten().copied().collect();
    let x = Tensor::from_vec(flat, (windows.len(), channels, len / channels.max(1)), &Device::Cpu)?;
    let y =
        Tensor::from_vec(labels.iter().map(|&l| l as u32).collect::<Vec<_>>(), labels.len(), &Device::Cpu)?;
    Ok((x, y))
}

/// Loss and accuracy of `model` on `(x, y)`.
pub fn evaluate(model: &GraphModel, x: &Tensor, y: &Tensor) -> Result<(f32, f64)> {
    let logits = model.forward(x)?;
    let loss = candle_nn::loss::cross_entropy(&logits, y)?.to_scalar::<f32>()?;
    let predicted = logits.argmax(D::Minus1)?.to_dtype(DType::U32)?;
    let hits = predicted.eq(y)?.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()?;
    Ok((loss, f64::from(hits) / y.dims()[0].max(1) as f64))
}

/// Trains `model` on `train` with AdamW (two learning rates), keeping the epoch of lowest
/// validation loss when `val` is given (epoch 0 is the start: when no epoch improves on
/// it, the model is left as it came). `on_epoch` gets the epoch (from 1), the training
/// loss and accuracy, and the validation loss and accuracy. Returns the validation loss
/// at the start and at the kept epoch, and that epoch.
pub fn train(
    model: &GraphModel,
    train: (&Tensor, &Tensor),
    val: Option<(&Tensor, &Tensor)>,
    cfg: GraphTraining,
    mut on_epoch: impl FnMut(usize, f32, f64, Option<(f32, f64)>),
) -> Result<Option<(f32, f32, usize)>> {
    let params = |lr| ParamsAdamW { lr, weight_decay: cfg.weight_decay, ..Default::default() };
    let mut head_opt = AdamW::new(model.vars(&model.head), params(cfg.lr))?;
    let backbone_vars = model.vars(&model.backbone);
    let mut backbone_opt = (!backbone_vars.is_empty())
        .then(|| AdamW::new(backbone_vars, params(cfg.backbone_lr)))
        .transpose()?;
    let n = train.0.dims()[0];
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let first_val = val.map(|(x, y)| evaluate(model, x, y)).transpose()?.map(|v| v.0);
    let mut best = match first_val {
        Some(loss) => Some((loss, 0usize, model.snapshot()?)),
        None => None,
    };
    for epoch in 1..=cfg.epochs {
        order.shuffle(&mut rng);
        for chunk in order.chunks(cfg.batch.max(1)) {
            let idx = Tensor::from_vec(
                chunk.iter().map(|&i| i as u32).collect::<Vec<_>>(),
                chunk.len(),
                &Device::Cpu,
            )?;
            let (x, y) = (train.0.index_select(&idx, 0)?, train.1.index_select(&idx, 0)?);
            let loss = candle_nn::loss::cross_entropy(&model.forward(&x)?, &y)?;
            let grads = loss.backward()?;
            head_opt.step(&grads)?;
            if let Some(opt) = backbone_opt.as_mut() {
                opt.step(&grads)?;
            }
        }
        let (loss, acc) = evaluate(model, train.0, train.1)?;
        let validation = val.map(|(x, y)| evaluate(model, x, y)).transpose()?;
        on_epoch(epoch, loss, acc, validation);
        if let Some((val_loss, _)) = validation {
            if best.as_ref().is_some_and(|b| val_loss < b.0) {
                best = Some((val_loss, epoch, model.snapshot()?));
            } else if best.as_ref().is_some_and(|b| epoch >= b.1 + cfg.patience) {
                break;
            }
        }
    }
    match (best, first_val) {
        (Some((loss, epoch, snapshot)), Some(first)) => {
            model.restore(&snapshot)?;
            Ok(Some((first, loss, epoch)))
        }
        _ => Ok(None),
    }
}
