//! Rearranging weight matrices at load time into the row-interleaved layout of
//! [`openweight_kernels::interleave`], for CPUs whose kernels read it (AVX-512 VNNI: Q4_0,
//! Q4_1, Q5_0, Q5_1, Q8_0).
//!
//! Decode streams every weight once per token; in the interleaved layout the kernels spend
//! about half the instructions per byte, which lets them keep up with memory. The copy has
//! the file's size (the layout only moves bytes), and the file's pages of each rearranged
//! matrix are handed back to the OS as the copy is made
//! ([`GgufFile::release_pages`]), so resident memory stays about the file's size: it moves
//! from the mapping to the heap. Other types, stacked experts and latent-attention weights
//! keep computing from the mapping.
//!
//! `OPENWEIGHT_INTERLEAVE=0` turns this off (to compare, or to keep every weight mapped).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytemuck::{Pod, Zeroable};
use openweight_kernels::dispatch::{self, KernelSet};
use openweight_kernels::formats::format;
use openweight_kernels::interleave::{
    can_interleave, interleave_group, interleaved_len, INTERLEAVE_ROWS,
};
use openweight_kernels::GgmlType;
use rayon::prelude::*;

use super::weights::{Matrix, Weights};
use crate::gguf::GgufFile;

/// Source bytes rearranged before their pages are released (bounds the time a matrix is
/// resident twice).
const CHUNK_BYTES: usize = 8 << 20;

/// One 64-byte line: a `Vec` of these is a cache-line aligned byte buffer.
#[repr(C, align(64))]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Line([u8; 64]);

/// A matrix's bytes in the interleaved layout, 64-byte aligned.
pub struct InterleavedBytes {
    lines: Vec<Line>,
    len: usize,
}

impl InterleavedBytes {
    /// The bytes ([`interleaved_len`] of the matrix's shape).
    pub fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.lines)[..self.len]
    }
}

impl std::fmt::Debug for InterleavedBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "InterleavedBytes({} bytes)", self.len)
    }
}

/// What loading a model rearranged (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct InterleaveReport {
    /// Matrices rearranged.
    pub matrices: usize,
    /// Their bytes (now on the heap instead of mapped).
    pub bytes: usize,
    /// Time taken.
    pub elapsed: Duration,
}

/// Whether loading rearranges weights: yes unless `OPENWEIGHT_INTERLEAVE=0`.
pub fn enabled() -> bool {
    std::env::var("OPENWEIGHT_INTERLEAVE").as_deref() != Ok("0")
}

/// Whether a loaded model keeps matrices of type `ty` interleaved on this CPU ([`enabled`]
/// and the best kernels read the type that way): what benchmarks of single matrices need
/// to time the same layout.
pub fn interleaves(ty: GgmlType) -> bool {
    enabled() && kernels_read_interleaved(dispatch::best(), ty)
}

/// Whether `kernels` read `ty` in the interleaved layout.
fn kernels_read_interleaved(kernels: &KernelSet, ty: GgmlType) -> bool {
    can_interleave(ty) && kernels.interleaved(ty).is_some()
}

/// Rearranges every matrix of `weights` that the best kernels can read interleaved (see
/// the module docs), releasing the file's pages of each as it goes. Does nothing when
/// [`enabled`] is false or the kernels have no interleaved kernels.
pub(crate) fn interleave_weights(weights: &mut Weights, file: &GgufFile) -> InterleaveReport {
    let start = Instant::now();
    let mut report = InterleaveReport::default();
    if !enabled() {
        return report;
    }
    let kernels = dispatch::best();
    for m in candidates(weights) {
        if m.interleaved.is_none() && kernels_read_interleaved(kernels, m.ty) {
            interleave_matrix(m, file);
            report.matrices += 1;
            report.bytes += m.interleaved.as_ref().map_or(0, |b| b.len);
        }
    }
    report.elapsed = start.elapsed();
    report
}

/// The matrices that go through the plain matmul: attention projections, dense FFNs,
/// shared experts and the output head (not stacked experts, which are sliced per expert,
/// nor latent attention).
fn candidates(w: &mut Weights) -> Vec<&mut Matrix> {
    let mut out: Vec<&mut Matrix> = Vec::new();
    for l in &mut w.layers {
        out.extend([&mut l.wq, &mut l.wk, &mut l.wv].into_iter().flatten());
        out.push(&mut l.wo);
        if l.ffn_gate_inp.is_none() {
            out.extend([&mut l.w_gate, &mut l.w_up, &mut l.w_down]);
        }
        if let Some(shexp) = &mut l.shexp {
            out.extend(shexp.iter_mut());
        }
    }
    out.push(&mut w.output);
    out
}

/// Rearranges `m` (chunk by chunk, in parallel on the global rayon pool) and releases the
/// file's pages of each chunk once it is copied.
fn interleave_matrix(m: &mut Matrix, file: &GgufFile) {
    let src = file.tensor_data(&m.info);
    let len = interleaved_len(m.ty, m.rows, m.cols);
    let mut lines = vec![Line([0; 64]); len.div_ceil(64)];
    let dst = &mut bytemuck::cast_slice_mut::<Line, u8>(&mut lines)[..len];
    let group_bytes = INTERLEAVE_ROWS * format(m.ty).row_bytes(m.cols);
    let chunk = (CHUNK_BYTES / group_bytes).max(1) * group_bytes;
    let (ty, cols) = (m.ty, m.cols);
    for (i, (src_chunk, dst_chunk)) in src.chunks(chunk).zip(dst.chunks_mut(chunk)).enumerate() {
        src_chunk
            .par_chunks(group_bytes)
            .zip(dst_chunk.par_chunks_mut(group_bytes))
            .for_each(|(s, d)| interleave_group(ty, s, cols, d));
        // Everything up to here is copied: its pages may go (earlier chunks' leftovers at
        // the 64 KiB unit edges go with this call).
        file.release_pages(&src[..(i * chunk + src_chunk.len())]);
    }
    m.interleaved = Some(Arc::new(InterleavedBytes { lines, len }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::GgufWriter;

    #[test]
    fn a_matrix_is_rearranged_with_its_shape_and_reads_back_the_same_products() {
        // 20 rows (a padded last group) of 64 columns of Q8_0 with varied bytes.
        let (rows, cols) = (20usize, 64usize);
        let f = format(GgmlType::Q8_0);
        let x: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 37) % 101) as f32 - 50.0)
            .collect();
        let mut q = vec![0u8; rows * f.row_bytes(cols)];
        (f.quantize.unwrap())(&x, &mut q);
        let mut w = GgufWriter::new();
        w.add_tensor("m", &[cols as u64, rows as u64], GgmlType::Q8_0.id(), q)
            .unwrap();
        let file = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
        let info = file.tensor("m").unwrap().clone();
        let mut m = Matrix {
            info,
            ty: GgmlType::Q8_0,
            rows,
            cols,
            interleaved: None,
        };
        let plain = m.mat(&file);
        let plain_bytes = plain.data.to_vec();
        interleave_matrix(&mut m, &file);
        let bytes = m.interleaved.as_ref().unwrap().bytes();
        assert_eq!(bytes.len(), interleaved_len(GgmlType::Q8_0, rows, cols));
        assert_eq!(bytes.as_ptr() as usize % 64, 0, "cache-line aligned");
        let mut want = vec![0u8; bytes.len()];
        openweight_kernels::interleave::interleave(
            GgmlType::Q8_0,
            &plain_bytes,
            rows,
            cols,
            &mut want,
        );
        assert_eq!(bytes, &want[..]);
        // Row views read the file again.
        assert!(m.rows(16, 4).interleaved.is_none());
    }
}
