//! Time per node of a tract plan: what `vigil bench --profile` prints, to find the nodes
//! a backbone spends its time in (tract's own per-node evaluation hook, timed in Rust),
//! and of the patchify layer the runtime runs ahead of the plan.

use crate::error::Result;
use crate::patchify::Patchify;
use std::time::Instant;
use tract_onnx::prelude::*;

/// The mean time of one node of a plan over the profiled runs.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeTime {
    /// The node's name in tract's optimised plan (ONNX names, with tract's suffixes).
    pub name: String,
    /// tract's operator (`OptMatMul`, `Im2col`, `Reduce<Max>`, ...), or
    /// [`PATCHIFY_OP`] for the layer the runtime runs in Rust.
    pub op: String,
    /// Microseconds per run.
    pub us: f64,
}

/// Runs `state` on `input()` `runs` times (after as many unmeasured runs) and returns
/// the time of each node that took any, in plan order.
pub(crate) fn profile_state(
    state: &mut TypedSimpleState,
    runs: usize,
    mut input: impl FnMut() -> Result<Tensor>,
) -> Result<Vec<NodeTime>> {
    let runs = runs.max(1);
    for _ in 0..runs {
        state.run(tvec!(input()?.into()))?;
    }
    let nodes = state.model().nodes().len();
    let mut total = vec![0.0f64; nodes];
    for _ in 0..runs {
        state.run_plan_with_eval(tvec!(input()?.into()), |session, op_state, node, inputs| {
            let started = Instant::now();
            let out = tract_onnx::tract_core::plan::eval(session, op_state, node, inputs);
            total[node.id] += started.elapsed().as_secs_f64() * 1e6;
            out
        })?;
    }
    Ok(state
        .model()
        .nodes()
        .iter()
        .filter(|n| total[n.id] > 0.0)
        .map(|n| NodeTime {
            name: n.name.clone(),
            op: n.op().name().to_string(),
            us: total[n.id] / runs as f64,
        })
        .collect())
}

/// The operator name the patchify layer run in Rust has in a profile.
pub const PATCHIFY_OP: &str = "Patchify (Rust, ahead of tract)";

/// The mean time of `front` on `input` over `runs` runs (after as many unmeasured).
pub(crate) fn time_patchify(front: &Patchify, input: &[f32], runs: usize) -> Result<NodeTime> {
    let runs = runs.max(1);
    let mut out = Vec::new();
    let mut once = || front.run(input, &mut out);
    for _ in 0..runs {
        once()?;
    }
    let started = Instant::now();
    for _ in 0..runs {
        once()?;
    }
    Ok(NodeTime {
        name: front.names().to_string(),
        op: PATCHIFY_OP.to_string(),
        us: started.elapsed().as_secs_f64() * 1e6 / runs as f64,
    })
}
