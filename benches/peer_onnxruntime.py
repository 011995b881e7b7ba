"""Scores the same windows as benches/window_score.rs with onnxruntime (one thread).

Usage: python3 benches/peer_onnxruntime.py MODEL.onnx WINDOWS.f32le
Prints microseconds per window (normalisation + full graph), median of 5 passes.
"""
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort

model, raw = sys.argv[1], sys.argv[2]
opts = ort.SessionOptions()
opts.intra_op_num_threads = 1
opts.inter_op_num_threads = 1
opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
window = sess.get_inputs()[0].shape[2]
x = np.fromfile(raw, dtype="<f4")
windows = x[: len(x) // window * window].reshape(-1, 1, window)


def normalise(w):
    w = w - w.mean(axis=-1, keepdims=True)
    rms = np.sqrt((w * w).mean(axis=-1, keepdims=True))
    return (w / np.maximum(rms, 1e-4)).astype(np.float32)


name = sess.get_inputs()[0].name
for w in windows[:8]:
    sess.run(None, {name: normalise(w)[None]})
passes = []
for _ in range(5):
    t0 = time.perf_counter()
    for _ in range(10):
        for w in windows:
            sess.run(None, {name: normalise(w)[None]})
    passes.append((time.perf_counter() - t0) / (10 * len(windows)) * 1e6)
print(f"onnxruntime {ort.__version__} (1 thread): {statistics.median(passes):.1f} us per window over {len(windows)} windows")
