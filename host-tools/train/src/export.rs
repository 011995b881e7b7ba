//! Writes the trained CNN as an ONNX graph with Vigil's metadata.

use super::cnn::{spectrum_basis, BackboneSpec, NamedWeight, Pooling, SPECTRUM_FLOOR};
use tract_onnx::pb::{
    attribute_proto::AttributeType, tensor_shape_proto::dimension::Value as DimValue,
    tensor_shape_proto::Dimension, type_proto, AttributeProto, GraphProto, ModelProto, OperatorSetIdProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use vigil_runtime::metadata::ModelMetadata;
use vigil_runtime::onnx::{float_initializer, ints_attribute as ints, node, write_metadata};

fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Int as i32, i: value, ..Default::default() }
}

/// A float tensor's value info with the given dimensions.
pub fn value_info(name: &str, dims: &[DimValue]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: 1,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| Dimension { value: Some(d.clone()), ..Default::default() })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Builds the ONNX model: `signal [N, C, W] -> conv/relu ... -> GlobalAveragePool ->
/// Flatten (embedding) -> Gemm (logits)`, or with a spectral embedding `conv/relu ... ->
/// MatMul (cos, sin) -> Mul, Add -> Flatten -> Add (floor) -> MatMul (ones), Div -> Sqrt
/// -> Gemm -> Relu (embedding) -> Gemm (logits)`.
pub fn build_model(spec: &BackboneSpec, weights: &[NamedWeight], meta: &ModelMetadata) -> ModelProto {
    let mut nodes = Vec::new();
    let mut prev = meta.input_name.clone();
    for (i, c) in spec.convs.iter().enumerate() {
        let conv = format!("conv{}", i + 1);
        let (w, b) = (format!("{conv}.weight"), format!("{conv}.bias"));
        nodes.push(node(
            "Conv",
            &conv,
            &[&prev, &w, &b],
            vec![
                ints("kernel_shape", &[c.kernel as i64]),
                ints("strides", &[c.stride as i64]),
                ints("dilations", &[c.dilation as i64]),
                ints("pads", &[c.padding as i64, c.padding as i64]),
            ],
        ));
        let relu = format!("relu{}", i + 1);
        nodes.push(node(c.activation.onnx_op(), &relu, &[&conv], vec![]));
        prev = relu;
    }
    let mut initializer: Vec<TensorProto> =
        weights.iter().map(|(n, d, v)| float_initializer(n, d, v)).collect();
    match &spec.spectrum {
        Some(sp) => {
            // Amplitudes of the fixed transform as a unit vector, then the dense layer. The
            // window's total power is a product with a column of ones.
            let (cos, sin) = spectrum_basis(sp.frames);
            let dims = [sp.frames, sp.bins()];
            let features = spec.last_channels() * sp.bins();
            initializer.push(float_initializer("spectrum.cos", &dims, &cos));
            initializer.push(float_initializer("spectrum.sin", &dims, &sin));
            initializer.push(float_initializer("spectrum.floor", &[], &[SPECTRUM_FLOOR]));
            initializer.push(float_initializer("spectrum.ones", &[features, 1], &vec![1.0; features]));
            nodes.push(node("MatMul", "spectrum_re", &[&prev, "spectrum.cos"], vec![]));
            nodes.push(node("MatMul", "spectrum_im", &[&prev, "spectrum.sin"], vec![]));
            nodes.push(node("Mul", "spectrum_re2", &["spectrum_re", "spectrum_re"], vec![]));
            nodes.push(node("Mul", "spectrum_im2", &["spectrum_im", "spectrum_im"], vec![]));
            nodes.push(node("Add", "spectrum_power", &["spectrum_re2", "spectrum_im2"], vec![]));
            nodes.push(node("Flatten", "spectrum_flat", &["spectrum_power"], vec![int("axis", 1)]));
            nodes.push(node("Add", "spectrum_floored", &["spectrum_flat", "spectrum.floor"], vec![]));
            nodes.push(node("MatMul", "spectrum_total", &["spectrum_floored", "spectrum.ones"], vec![]));
            nodes.push(node("Div", "spectrum_share", &["spectrum_floored", "spectrum_total"], vec![]));
            nodes.push(node("Sqrt", "spectrum", &["spectrum_share"], vec![]));
            nodes.push(node(
                "Gemm",
                "dense",
                &["spectrum", "dense.weight", "dense.bias"],
                vec![int("transB", 1)],
            ));
            nodes.push(node("Relu", &meta.embedding_node, &["dense"], vec![]));
        }
        None => {
            match spec.pooling {
                Pooling::Mean => nodes.push(node("GlobalAveragePool", "pool", &[&prev], vec![])),
                Pooling::MeanMax => {
                    nodes.push(node("GlobalAveragePool", "pool_mean", &[&prev], vec![]));
                    nodes.push(node("GlobalMaxPool", "pool_max", &[&prev], vec![]));
                    nodes.push(node("Concat", "pool", &["pool_mean", "pool_max"], vec![int("axis", 1)]));
                }
            }
            nodes.push(node("Flatten", &meta.embedding_node, &["pool"], vec![int("axis", 1)]));
        }
    }
    nodes.push(node(
        "Gemm",
        &meta.logits_node,
        &[&meta.embedding_node, &meta.head_weight, &meta.head_bias],
        vec![int("transB", 1)],
    ));
    let batch = DimValue::DimParam("batch".into());
    let graph = GraphProto {
        name: "vigil-backbone".into(),
        node: nodes,
        initializer,
        input: vec![value_info(
            &meta.input_name,
            &[
                batch.clone(),
                DimValue::DimValue(meta.channels as i64),
                DimValue::DimValue(meta.window as i64),
            ],
        )],
        output: vec![value_info(
            &meta.logits_node,
            &[batch, DimValue::DimValue(meta.class_names.len() as i64)],
        )],
        ..Default::default()
    };
    let mut model = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 13 }],
        producer_name: "vigil".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(graph),
        ..Default::default()
    };
    write_metadata(&mut model, meta);
    model
}

#[cfg(test)]
mod tests {
    //! Streaming an exported backbone: unpadded homogeneous convolutions stream exactly;
    //! padded ones have edge frames, which the streamer counts and reports.

    use super::*;
    use crate::cnn::{Activation, Cnn, ConvSpec};
    use candle_core::Device;
    use rand::SeedableRng;
    use std::path::Path;
    use vigil_core::alarm::AlarmPolicy;
    use vigil_core::normalise::{Centre, Normalisation, Scaling};
    use vigil_runtime::model::VigilModel;
    use vigil_runtime::streaming::StreamingEmbedder;

    fn model(spec: BackboneSpec, window: usize) -> VigilModel {
        model_of(spec, window, 1)
    }

    fn model_of(spec: BackboneSpec, window: usize, channels: usize) -> VigilModel {
        let bytes = model_bytes(spec, window, channels);
        VigilModel::from_bytes(&bytes, Path::new("<test model>")).expect("loads")
    }

    fn model_bytes(spec: BackboneSpec, window: usize, channels: usize) -> Vec<u8> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let cnn = Cnn::new(spec.clone(), 2, &mut rng, &Device::Cpu).expect("cnn");
        let d = spec.embedding_dim();
        let meta = ModelMetadata {
            sample_rate_hz: 16_000.0,
            window,
            hop: window / 2,
            channels,
            class_names: vec!["normal".into(), "fault".into()],
            normal_class: 0,
            input_name: "signal".into(),
            embedding_node: "embedding".into(),
            logits_node: "logits".into(),
            head_weight: "head.weight".into(),
            head_bias: "head.bias".into(),
            normalisation: Normalisation {
                centre: Centre::WindowMean,
                scaling: Scaling::WindowRms { floor: 1e-4 },
            },
            prototype_mean: vec![0.0; d],
            prototype_var: vec![1.0; d],
            alarm: AlarmPolicy { threshold: 1.0, raise_k: 3, window_n: 5, clear_ratio: 0.7 },
            baseline_bands: Vec::new(),
            head_version: 1,
        };
        let weights = cnn.named_weights().expect("weights");
        vigil_runtime::onnx::encode_model(&build_model(&spec, &weights, &meta))
    }

    fn conv(in_ch: usize, out_ch: usize, kernel: usize, stride: usize, padding: usize) -> ConvSpec {
        ConvSpec { in_ch, out_ch, kernel, stride, dilation: 1, padding, activation: Activation::Relu }
    }

    /// A signal whose offset and amplitude drift, so per-window normalisation matters.
    fn signal(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let t = i as f32 / 16_000.0;
                let gain = 1.0 + 0.8 * (t * 1.7).sin();
                0.3 + 0.2 * t + gain * ((t * 2_900.0).sin() + 0.4 * (t * 7_300.0 + (t * 31.0).sin()).sin())
            })
            .collect()
    }

    /// A streamed embedding and the embedding of the same window on its own.
    type Pair = (Vec<f32>, Vec<f32>);

    /// The embeddings a stream at `hop` gives and those of each window on its own.
    fn streamed_and_full(m: &VigilModel, hop: usize) -> (StreamingEmbedder, Vec<Pair>) {
        let meta = m.metadata().clone();
        let mut streamer = StreamingEmbedder::new(m, hop).expect("streams");
        let mut embedder = m.embedder().expect("embedder");
        let x = signal(meta.window * 6);
        let mut pairs = Vec::new();
        for (k, chunk) in x.chunks_exact(hop).enumerate() {
            let Some(streamed) = streamer.push(chunk).expect("push") else { continue };
            let end = (k + 1) * hop - streamer.delay_samples();
            let mut w = x[end - meta.window..end].to_vec();
            meta.normalise(&mut w);
            pairs.push((streamed, embedder.run(&w).expect("runs")));
        }
        (streamer, pairs)
    }

    fn worst_relative(pairs: &[Pair]) -> f32 {
        pairs
            .iter()
            .map(|(a, b)| {
                let size = b.iter().map(|v| v.abs()).fold(0.0f32, f32::max).max(1e-9);
                a.iter().zip(b).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max) / size
            })
            .fold(0.0, f32::max)
    }

    /// A patchify layer rectified by Abs exports as an ONNX Abs node; tract computes the
    /// same logits as candle, and Abs keeps an unpadded homogeneous backbone exact when
    /// streamed (|a x| = a |x| for a > 0).
    #[test]
    fn an_abs_rectified_patchify_layer_exports_and_streams() {
        let spec = BackboneSpec {
            convs: vec![
                ConvSpec { activation: Activation::Abs, ..conv(1, 8, 16, 16, 0) },
                conv(8, 8, 3, 1, 0),
                conv(8, 8, 3, 2, 0),
            ],
            pooling: Pooling::MeanMax,
            homogeneous: true,
            spectrum: None,
        };
        let bytes = model_bytes(spec.clone(), 1024, 1);
        let proto = vigil_runtime::onnx::decode_model(&bytes, Path::new("<test model>")).expect("decodes");
        let ops: Vec<&str> =
            proto.graph.as_ref().expect("graph").node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops[..6], ["Conv", "Abs", "Conv", "Relu", "Conv", "Relu"]);

        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let cnn = Cnn::new(spec, 2, &mut rng, &Device::Cpu).expect("cnn");
        let m = VigilModel::from_bytes(&bytes, Path::new("<test model>")).expect("loads");
        let mut full = m.full_model().expect("full model");
        let mut w = signal(1024);
        m.metadata().normalise(&mut w);
        let x = candle_core::Tensor::from_vec(w.clone(), (1, 1, 1024), &Device::Cpu).expect("tensor");
        let (_, logits) = cnn.forward(&x, false).expect("forward");
        let want = logits.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("logits");
        let got = full.run(&w).expect("tract runs");
        let worst = want.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst < 1e-4, "tract against candle: {worst}");

        let (streamer, pairs) = streamed_and_full(&m, 128);
        assert!(streamer.exact(), "{:?}", streamer.inexact_reason());
        assert!(worst_relative(&pairs) < 1e-4);
    }

    /// A spectral backbone exports as Conv, Abs, Conv, Relu, two MatMuls with the fixed
    /// transform, the amplitudes as a unit vector, and a dense layer; tract computes candle's logits, the
    /// runtime's embedding and Rust head give the same, the graph trainer (fine-tuning's
    /// path) runs it too, and streaming is refused by a sentence, not a panic.
    #[test]
    fn a_spectral_backbone_exports_and_runs_in_tract_as_in_candle() {
        use crate::graph::{GraphModel, Trainable};
        let spec = BackboneSpec {
            convs: vec![
                ConvSpec { activation: Activation::Abs, ..conv(1, 8, 16, 16, 0) },
                conv(8, 4, 3, 1, 1),
            ],
            pooling: Pooling::Mean,
            homogeneous: false,
            spectrum: Some(crate::cnn::SpectrumSpec { frames: 64, width: 12, dropout: 0.5 }),
        };
        let bytes = model_bytes(spec.clone(), 1024, 1);
        let proto = vigil_runtime::onnx::decode_model(&bytes, Path::new("<test model>")).expect("decodes");
        let ops: Vec<&str> =
            proto.graph.as_ref().expect("graph").node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(
            ops,
            [
                "Conv", "Abs", "Conv", "Relu", "MatMul", "MatMul", "Mul", "Mul", "Add", "Flatten", "Add",
                "MatMul", "Div", "Sqrt", "Gemm", "Relu", "Gemm"
            ]
        );

        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let cnn = Cnn::new(spec, 2, &mut rng, &Device::Cpu).expect("cnn");
        let m = VigilModel::from_bytes(&bytes, Path::new("<test model>")).expect("loads");
        let mut full = m.full_model().expect("full model");
        let mut embedder = m.embedder().expect("embedder");
        let graph =
            GraphModel::new(&proto, "signal", "logits", ("head.weight", "head.bias"), Trainable::All, None)
                .expect("the graph trainer reads it");
        for seed in 0..3 {
            let mut w = signal(1024 + 300 * seed);
            w.drain(..300 * seed);
            m.metadata().normalise(&mut w);
            let x = candle_core::Tensor::from_vec(w.clone(), (1, 1, 1024), &Device::Cpu).expect("tensor");
            let (embedding, logits) = cnn.forward(&x, false).expect("forward");
            let want = logits.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("logits");
            let size = want.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            assert!(size > 1e-3, "logits {want:?}");
            let close = |got: &[f32], what: &str| {
                let worst = want.iter().zip(got).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
                assert!(worst < 1e-4 * size.max(1.0), "{what} against candle: {worst} ({got:?} vs {want:?})");
            };
            close(&full.run(&w).expect("tract runs"), "tract");
            let e = embedder.run(&w).expect("embeds");
            let want_e = embedding.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("embedding");
            assert_eq!(e.len(), 12);
            assert!(
                e.iter().zip(&want_e).all(|(a, b)| (a - b).abs() < 1e-4 * (1.0 + b.abs())),
                "{e:?} vs {want_e:?}"
            );
            let mut headed = vec![0.0f32; 2];
            m.head().logits(&e, &mut headed).expect("head");
            close(&headed, "embedding + Rust head");
            let trained =
                graph.forward(&x).and_then(|t| Ok(t.flatten_all()?.to_vec1::<f32>()?)).expect("graph");
            close(&trained, "graph trainer");
        }
        let refused = streamer_refuses(&m, 128);
        assert!(!refused.is_empty(), "a spectral backbone cannot be streamed frame by frame");
    }

    #[test]
    fn an_unpadded_homogeneous_backbone_streams_exactly() {
        let spec = BackboneSpec {
            convs: vec![conv(1, 8, 16, 16, 0), conv(8, 8, 3, 1, 0), conv(8, 8, 3, 2, 0)],
            pooling: Pooling::MeanMax,
            homogeneous: true,
            spectrum: None,
        };
        let m = model(spec, 1024);
        for hop in [32, 128, 512] {
            let (streamer, pairs) = streamed_and_full(&m, hop);
            assert!(streamer.exact(), "hop {hop}: {:?}", streamer.inexact_reason());
            assert_eq!((streamer.edge_frames(), streamer.delay_samples()), (0, 0));
            assert!(pairs.len() > 10);
            let worst = worst_relative(&pairs);
            assert!(worst < 1e-4, "hop {hop}: streamed embeddings differ by {worst} of their size");
        }
    }

    #[test]
    fn padded_convolutions_have_edge_frames_that_the_streamer_reports() {
        // k3 stride-2 convolutions padded by one: the first frame of a window reaches
        // into the padding, where a stream has real samples.
        let spec = BackboneSpec {
            convs: vec![conv(1, 8, 16, 16, 0), conv(8, 8, 3, 2, 1), conv(8, 8, 3, 2, 1)],
            pooling: Pooling::MeanMax,
            homogeneous: true,
            spectrum: None,
        };
        let m = model(spec, 1024);
        let (streamer, pairs) = streamed_and_full(&m, 128);
        assert_eq!(streamer.edge_frames(), 1);
        assert!(!streamer.exact());
        assert!(streamer.inexact_reason().is_some_and(|r| r.contains("1 of 16 frames")));
        assert!(worst_relative(&pairs) > 1e-3, "an edge frame should change the embedding");
        let refused = streamer_refuses(&m, 100);
        assert!(refused.contains("multiple of the backbone's stride of 64"), "{refused}");
    }

    #[test]
    fn a_multichannel_patchify_layer_run_in_rust_computes_the_same_embedding() {
        use tract_onnx::prelude::*;
        let spec = BackboneSpec {
            convs: vec![conv(3, 8, 16, 16, 0), conv(8, 8, 3, 2, 1)],
            pooling: Pooling::MeanMax,
            homogeneous: false,
            spectrum: None,
        };
        let written = model_bytes(spec, 512, 3);
        let m = VigilModel::from_bytes(&written, Path::new("<test model>")).expect("loads");
        let proto = vigil_runtime::onnx::decode_model(&written, Path::new("<test model>")).expect("decodes");
        let (_, rest) = vigil_runtime::patchify::Patchify::split(&proto, "signal", 3, "embedding")
            .expect("a patchify layer");
        let nodes = |p: &tract_onnx::pb::ModelProto| p.graph.as_ref().map_or(0, |g| g.node.len());
        assert_eq!(nodes(&rest), nodes(&proto) - 2, "the first convolution and its ReLU were not split off");
        let mut graph = tract_onnx::onnx()
            .model_for_read(&mut written.as_slice())
            .expect("reads")
            .with_input_fact(0, f32::fact([1, 3, 512]).into())
            .expect("input");
        graph.select_outputs_by_name(["embedding"]).expect("cut");
        let as_written = graph.into_optimized().expect("optimises").into_runnable().expect("plan");
        let x: Vec<f32> = signal(3 * 512);
        let out = as_written
            .run(tvec!(Tensor::from_shape(&[1, 3, 512], &x).expect("tensor").into()))
            .expect("runs");
        let reference: Vec<f32> = out[0].to_plain_array_view::<f32>().expect("f32").iter().copied().collect();
        let ours = m.embedder().expect("embedder").run(&x).expect("runs");
        let top = reference.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        assert!(top > 0.0);
        for (a, b) in ours.iter().zip(&reference) {
            assert!((a - b).abs() <= 1e-5 * top, "{a} against {b}");
        }
    }

    fn streamer_refuses(m: &VigilModel, hop: usize) -> String {
        StreamingEmbedder::new(m, hop).err().map(|e| e.to_string()).unwrap_or_default()
    }
}
