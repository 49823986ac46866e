//! Scalar reference kernels (the oracle every SIMD path is tested against).
//! PLACEHOLDER: being written; only F32 so far.

use crate::dispatch::KernelSet;
use crate::types::GgmlType;

/// Installs every scalar kernel into `set`.
pub(crate) fn install(set: &mut KernelSet) {
    set.set_dot(GgmlType::F32, dot_f32);
    set.set_quantize(GgmlType::F32, |x, out| out.copy_from_slice(bytemuck::cast_slice(x)));
}

fn dot_f32(w: &[u8], acts: &[u8], act_row_bytes: usize, out: &mut [f32]) {
    let w: &[f32] = bytemuck::cast_slice(w);
    for (i, o) in out.iter_mut().enumerate() {
        let a = &acts[i * act_row_bytes..i * act_row_bytes + w.len() * 4];
        let a: &[f32] = bytemuck::cast_slice(a);
        *o = w.iter().zip(a).map(|(x, y)| x * y).sum();
    }
}
