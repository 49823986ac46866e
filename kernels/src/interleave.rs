//! The row-interleaved weight layout: a load-time rearrangement of the 32-element formats
//! (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) and of Q4_K and Q5_K for kernel sets that compute 16
//! weight rows per vector (AVX-512 VNNI: one row per 32-bit lane).
//!
//! Decode reads every weight byte once per token, so it is limited by how much arithmetic
//! each byte costs. In the file's row-major layout a kernel must, per row and block, gather
//! the block's scale and fold a vector of partial sums into one number. Here those steps
//! are paid once for 16 rows: the rows' fields are already lined up across the lanes, so one
//! load gives the 16 scales and `vpdpbusd` leaves each row's block total in its own lane.
//!
//! # Layout
//! Rows are taken in groups of [`INTERLEAVE_ROWS`]; a last group of fewer rows is padded with
//! zero rows (scale 0, so they contribute nothing and their results are dropped). Group `g`
//! starts at byte `g * 16 * row_bytes` and holds, for each block column `b` in order, one
//! interleaved block of `16 * block_bytes` bytes (the same bytes per row as the file):
//!
//! | part | bytes | contents |
//! |---|---|---|
//! | `d` | 32 | the 16 rows' f16 scales |
//! | `m` (Q4_1, Q5_1) | 32 | the 16 rows' f16 minimums |
//! | fifth bits (Q5_0, Q5_1) | 64 | 8 little-endian u64 masks: bit `4r + j` of mask `k` is the fifth bit of quant `4k + j` of row `r` |
//! | quants, Q4/Q5 | 256 | 4 vectors of 64 bytes: 4-byte lane `r` of vector `k` holds bytes `4k .. 4k + 4` of row `r`'s packed nibbles (low nibbles: quants `4k ..`, high nibbles: quants `16 + 4k ..`) |
//! | quants, Q8_0 | 512 | 8 vectors of 64 bytes: lane `r` of vector `k` holds quants `4k .. 4k + 4` of row `r`, each XOR `0x80` (so `q + 128` as an unsigned byte) |
//!
//! So after splitting the nibbles, "quant vector" `k` (0..8) holds quants `4k .. 4k + 4` of
//! every row, and mask `k` holds exactly their fifth bits, byte for byte.
//!
//! Q4_K and Q5_K (144- and 176-byte super-blocks) are interleaved without unpacking
//! anything: each super-block of the 16 rows is cut into 16-byte chunks, and chunk `c` takes
//! 256 bytes at `256 c`: 4 vectors of 64 bytes, 4-byte lane `r` of vector `k` holding bytes
//! `16 c + 4k .. 16 c + 4k + 4` of row `r`'s super-block. That is what the kernels' 16x4
//! transposes make of the file's rows, so a kernel reads each chunk with 4 plain loads.
//!
//! The rearrangement is exact: every field keeps its bits, and a kernel that reads it does the
//! same integer and f32 steps as on the file's layout (the tests compare bit for bit).

use crate::formats::format;
use crate::types::GgmlType;

/// Weight rows per interleaved group.
pub const INTERLEAVE_ROWS: usize = 16;

/// Whether `ty` has an interleaved layout (the 32-element formats paired with Q8_0 / Q8_1,
/// Q4_K and Q5_K).
pub fn can_interleave(ty: GgmlType) -> bool {
    is_legacy(ty) || is_chunked(ty)
}

/// The 32-element formats (the layout table of the module docs).
fn is_legacy(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q8_0
    )
}

/// The K-quants interleaved as transposed 16-byte chunks.
fn is_chunked(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q4_K | GgmlType::Q5_K)
}

/// Bytes of the interleaved form of `rows` rows of `cols` elements of `ty` (whole groups).
///
/// # Panics
/// If `ty` has no interleaved layout or `cols` is not a multiple of its block size.
pub fn interleaved_len(ty: GgmlType, rows: usize, cols: usize) -> usize {
    let f = checked_format(ty, cols);
    rows.div_ceil(INTERLEAVE_ROWS) * INTERLEAVE_ROWS * f.row_bytes(cols)
}

/// Where the parts of one interleaved block of a type sit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Parts {
    /// Offset of the minimums, if the type has them.
    pub min: Option<usize>,
    /// Offset of the fifth-bit masks, if the type has them.
    pub high_bits: Option<usize>,
    /// Offset of the quant vectors.
    pub quants: usize,
    /// Bytes of one interleaved block.
    pub bytes: usize,
}

/// The parts of an interleaved block of `ty`.
pub(crate) fn parts(ty: GgmlType) -> Parts {
    let (min, high_bits, quants) = match ty {
        GgmlType::Q4_0 => (None, None, 32),
        GgmlType::Q4_1 => (Some(32), None, 64),
        GgmlType::Q5_0 => (None, Some(32), 96),
        GgmlType::Q5_1 => (Some(32), Some(64), 128),
        GgmlType::Q8_0 => (None, None, 32),
        other => panic!("{other} has no interleaved layout"),
    };
    Parts {
        min,
        high_bits,
        quants,
        bytes: INTERLEAVE_ROWS * format(ty).block_bytes,
    }
}

/// The format of `ty`, after checking that it interleaves and that `cols` fits its blocks.
fn checked_format(ty: GgmlType, cols: usize) -> &'static crate::formats::Format {
    assert!(can_interleave(ty), "{ty} has no interleaved layout");
    let f = format(ty);
    assert!(
        cols.is_multiple_of(f.block_elems),
        "{cols} columns are not whole {ty} blocks"
    );
    f
}

/// Rearranges one group: `src` holds 1 ..= 16 rows of `cols` elements of `ty` in the file's
/// layout, `dst` receives the group's [`interleaved_len`]`(ty, 16, cols)` bytes (rows past
/// those of `src` are zero).
///
/// # Panics
/// If the sizes do not match (caller bugs) or `ty` has no interleaved layout.
pub fn interleave_group(ty: GgmlType, src: &[u8], cols: usize, dst: &mut [u8]) {
    let f = checked_format(ty, cols);
    let row_bytes = f.row_bytes(cols);
    assert!(
        !src.is_empty() && src.len().is_multiple_of(row_bytes),
        "{} source bytes are not whole rows of {row_bytes}",
        src.len()
    );
    let rows = src.len() / row_bytes;
    assert!(rows <= INTERLEAVE_ROWS, "{rows} rows do not fit one group");
    assert_eq!(dst.len(), INTERLEAVE_ROWS * row_bytes, "group length");
    if is_chunked(ty) {
        interleave_chunks(src, rows, row_bytes, f.block_bytes, dst);
        return;
    }
    let p = parts(ty);
    let bb = f.block_bytes;
    // Where the file's block keeps its fields: d, m, qh, qs.
    let (m_at, qh_at, qs_at) = match ty {
        GgmlType::Q4_0 | GgmlType::Q8_0 => (0, 0, 2),
        GgmlType::Q4_1 => (2, 0, 4),
        GgmlType::Q5_0 => (0, 2, 6),
        _ => (2, 4, 8), // Q5_1
    };
    // Padding rows are all-zero blocks (Q8_0's flipped quants then store 0x80).
    let zero_block = [0u8; 64];
    dst.fill(0);
    for (b, out) in dst.chunks_exact_mut(p.bytes).enumerate() {
        for r in 0..INTERLEAVE_ROWS {
            let blk = if r < rows {
                &src[r * row_bytes + b * bb..r * row_bytes + (b + 1) * bb]
            } else {
                &zero_block[..bb]
            };
            out[2 * r..2 * r + 2].copy_from_slice(&blk[..2]);
            if let Some(min) = p.min {
                out[min + 2 * r..min + 2 * r + 2].copy_from_slice(&blk[m_at..m_at + 2]);
            }
            if let Some(hb) = p.high_bits {
                let qh = u32::from_le_bytes(blk[qh_at..qh_at + 4].try_into().expect("4 bytes"));
                for k in 0..8 {
                    let bits = (qh >> (4 * k)) & 0xF;
                    let at = hb + 8 * k;
                    let mut mask = u64::from_le_bytes(out[at..at + 8].try_into().expect("8"));
                    mask |= u64::from(bits) << (4 * r);
                    out[at..at + 8].copy_from_slice(&mask.to_le_bytes());
                }
            }
            let vectors = if ty == GgmlType::Q8_0 { 8 } else { 4 };
            for k in 0..vectors {
                let at = p.quants + 64 * k + 4 * r;
                let quad = &blk[qs_at + 4 * k..qs_at + 4 * k + 4];
                for (o, &q) in out[at..at + 4].iter_mut().zip(quad) {
                    *o = if ty == GgmlType::Q8_0 { q ^ 0x80 } else { q };
                }
            }
        }
    }
}

/// The K-quant layout of the module docs for one group: `rows` rows of `row_bytes` in
/// `src`, super-blocks of `block_bytes` (a multiple of 16); missing rows are zero.
fn interleave_chunks(
    src: &[u8],
    rows: usize,
    row_bytes: usize,
    block_bytes: usize,
    dst: &mut [u8],
) {
    dst.fill(0);
    let group_block = INTERLEAVE_ROWS * block_bytes;
    for (b, out) in dst.chunks_exact_mut(group_block).enumerate() {
        for r in 0..rows {
            let blk = &src[r * row_bytes + b * block_bytes..][..block_bytes];
            for (c, chunk) in blk.chunks_exact(16).enumerate() {
                for (k, dword) in chunk.chunks_exact(4).enumerate() {
                    let at = 256 * c + 64 * k + 4 * r;
                    out[at..at + 4].copy_from_slice(dword);
                }
            }
        }
    }
}

/// Rearranges a whole matrix (`src`: `rows` rows in the file's layout) into `dst`
/// ([`interleaved_len`] bytes), one group after another.
///
/// # Panics
/// As for [`interleave_group`], or if the lengths do not match the shape.
pub fn interleave(ty: GgmlType, src: &[u8], rows: usize, cols: usize, dst: &mut [u8]) {
    let row_bytes = checked_format(ty, cols).row_bytes(cols);
    assert_eq!(src.len(), rows * row_bytes, "source length");
    assert_eq!(
        dst.len(),
        interleaved_len(ty, rows, cols),
        "destination length"
    );
    let group_bytes = INTERLEAVE_ROWS * row_bytes;
    for (src, dst) in src
        .chunks(group_bytes)
        .zip(dst.chunks_exact_mut(group_bytes))
    {
        interleave_group(ty, src, cols, dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Undoes [`interleave`] (the test's independent reading of the layout table).
    fn deinterleave(ty: GgmlType, src: &[u8], rows: usize, cols: usize) -> Vec<u8> {
        let f = format(ty);
        let (row_bytes, bb) = (f.row_bytes(cols), f.block_bytes);
        if is_chunked(ty) {
            let mut out = vec![0u8; rows * row_bytes];
            for (i, byte) in out.iter_mut().enumerate() {
                let (r, in_row) = (i / row_bytes, i % row_bytes);
                let (g, lane) = (r / INTERLEAVE_ROWS, r % INTERLEAVE_ROWS);
                let (b, in_block) = (in_row / bb, in_row % bb);
                let (c, k, j) = (in_block / 16, in_block % 16 / 4, in_block % 4);
                let group = g * INTERLEAVE_ROWS * row_bytes;
                *byte = src[group + b * INTERLEAVE_ROWS * bb + 256 * c + 64 * k + 4 * lane + j];
            }
            return out;
        }
        let p = parts(ty);
        let mut out = vec![0u8; rows * row_bytes];
        for r in 0..rows {
            let (g, lane) = (r / INTERLEAVE_ROWS, r % INTERLEAVE_ROWS);
            for b in 0..cols / f.block_elems {
                let ib = &src[g * INTERLEAVE_ROWS * row_bytes + b * p.bytes..][..p.bytes];
                let blk = &mut out[r * row_bytes + b * bb..][..bb];
                let mut field = 0;
                let mut put = |bytes: &[u8], blk: &mut [u8]| {
                    blk[field..field + bytes.len()].copy_from_slice(bytes);
                    field += bytes.len();
                };
                put(&ib[2 * lane..2 * lane + 2], blk);
                if let Some(m) = p.min {
                    put(&ib[m + 2 * lane..m + 2 * lane + 2], blk);
                }
                if let Some(hb) = p.high_bits {
                    let mut qh = 0u32;
                    for k in 0..8 {
                        let mask =
                            u64::from_le_bytes(ib[hb + 8 * k..hb + 8 * k + 8].try_into().unwrap());
                        qh |= (((mask >> (4 * lane)) & 0xF) as u32) << (4 * k);
                    }
                    put(&qh.to_le_bytes(), blk);
                }
                let vectors = if ty == GgmlType::Q8_0 { 8 } else { 4 };
                for k in 0..vectors {
                    let at = p.quants + 64 * k + 4 * lane;
                    let quad: Vec<u8> = ib[at..at + 4]
                        .iter()
                        .map(|&q| if ty == GgmlType::Q8_0 { q ^ 0x80 } else { q })
                        .collect();
                    put(&quad, blk);
                }
                assert_eq!(field, bb, "every byte of the block placed");
            }
        }
        out
    }

    const TYPES: [GgmlType; 5] = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
    ];

    #[test]
    fn interleaving_keeps_every_byte_and_pads_with_zeros() {
        let all = TYPES.into_iter().chain([GgmlType::Q4_K, GgmlType::Q5_K]);
        for ty in all {
            let k = format(ty).block_elems;
            for (rows, cols) in [(1, k), (16, 2 * k), (17, 3 * k), (35, k), (48, 4 * k)] {
                let n = rows * format(ty).row_bytes(cols);
                // Deterministic bytes that differ across rows, blocks and fields.
                let src: Vec<u8> = (0..n).map(|i| (i * 131 + i / 7) as u8).collect();
                let mut dst = vec![0xAAu8; interleaved_len(ty, rows, cols)];
                interleave(ty, &src, rows, cols, &mut dst);
                assert_eq!(
                    deinterleave(ty, &dst, rows, cols),
                    src,
                    "{ty} {rows}x{cols}"
                );
                let padded = rows.div_ceil(16) * 16;
                let pad = deinterleave(ty, &dst, padded, cols);
                let f = format(ty);
                let pad_rows = &pad[rows * f.row_bytes(cols)..];
                // Padding rows read back as zero blocks.
                assert!(pad_rows.iter().all(|&b| b == 0), "{ty} padding");
            }
        }
    }

    #[test]
    fn layout_sizes_are_the_file_sizes() {
        for ty in TYPES {
            assert_eq!(parts(ty).bytes, 16 * format(ty).block_bytes);
            assert_eq!(
                parts(ty).quants + if ty == GgmlType::Q8_0 { 512 } else { 256 },
                parts(ty).bytes,
                "{ty}"
            );
            assert_eq!(interleaved_len(ty, 17, 64), 32 * format(ty).row_bytes(64));
        }
    }

    #[test]
    #[should_panic(expected = "no interleaved layout")]
    fn q6_k_does_not_interleave() {
        interleaved_len(GgmlType::Q6_K, 16, 256);
    }
}
