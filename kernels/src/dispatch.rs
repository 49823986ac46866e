//! Run-time choice of kernels: the CPU is inspected once, and the best implementation of
//! every dot product and activation quantizer is kept in a table of function pointers.
//!
//! The scalar implementations (`scalar.rs`) fill the whole table first; SIMD modules then
//! overwrite the entries they implement, so a type without a SIMD kernel still works.

use std::sync::OnceLock;

use crate::types::GgmlType;

/// The largest number of activation rows one [`DotFn`] call handles.
pub const MAX_ACT_ROWS: usize = 8;

/// Dot products of one weight row with up to [`MAX_ACT_ROWS`] activation rows.
///
/// `w` is one weight row: `n / block_elems` blocks of the weight type. `acts` holds
/// `out.len()` activation rows (1 ..= [`MAX_ACT_ROWS`]) of the weight type's
/// `vec_dot_type`, back to back, each `act_row_bytes` long; only the first
/// `w.len() / block_bytes * act_block_bytes` bytes of each are read. `out[i]` receives the
/// dot product of the weight row with activation row `i`. Panics if the slices are shorter
/// than those sizes (a caller bug, never a data-dependent condition).
pub type DotFn = fn(w: &[u8], acts: &[u8], act_row_bytes: usize, out: &mut [f32]);

/// A [`DotFn`] over several weight rows that also receives the activation blocks' f16
/// scale fields already converted to f32, so a batch converts them once rather than once
/// per weight row, and decode pays the call once per `w_rows` rows.
///
/// Only for weights paired with Q8_0 or Q8_1 activations. `w` holds `w_rows` weight rows
/// back to back (each `w.len() / w_rows` bytes). `out` holds `w_rows * n` values for `n`
/// activation rows (1 ..= [`MAX_ACT_ROWS`]): `out[m * n + i]` = dot(weight row `m`,
/// activation row `i`). `act_scales` holds, for activation row `i`, the `d` of each of its
/// blocks at `i * scale_stride`, and right after them for Q8_1 the `s` of each block, for
/// Q8_0 the exact sum of each block's quants (`matmul::scale_rows` builds this table). Every result is bit for bit what the set's
/// [`DotFn`] for the same type gives for that weight row (the f16 fields carry the same
/// values).
pub type ScaledDotFn = fn(
    w: &[u8],
    w_rows: usize,
    acts: &[u8],
    act_row_bytes: usize,
    act_scales: &[f32],
    scale_stride: usize,
    out: &mut [f32],
);

/// Activation rows in one [`GemmFn`] tile.
pub const GEMM_TILE: usize = 8;

/// One tile of exactly [`GEMM_TILE`] quantized activation rows for a [`GemmFn`], with the
/// per-block fields it needs laid out block-major (entry `b * GEMM_TILE + t` is block `b` of
/// tile row `t`), so one vector load gives a block's values for all rows of the tile.
///
/// `matmul::tile_tables` builds the tables from the quantized rows.
#[derive(Clone, Copy, Debug)]
pub struct ActTile<'a> {
    /// The [`GEMM_TILE`] activation rows, `row_stride` bytes apart (only the first
    /// `n_blocks * act_block_bytes` bytes of each are read).
    pub quants: &'a [u8],
    /// Bytes from one activation row to the next.
    pub row_stride: usize,
    /// The blocks' `d` as f32, block-major.
    pub d: &'a [f32],
    /// Q8_1 only (else may be empty): the blocks' `s` as f32, block-major.
    pub s: &'a [f32],
    /// Q8_0: the exact sum of each block's 32 quants, block-major. Q8_K: per block and
    /// 32-element sub-block `j`, its two 16-element block sums packed as i16 pairs
    /// (`matmul::tile_tables` documents the layout). Q8_1: may be empty.
    pub sums: &'a [i32],
}

/// A GEMM tile kernel: dot products of `w_rows` weight rows (back to back in `w`, each
/// `w.len() / w_rows` bytes) with the [`GEMM_TILE`] activation rows of `tile`;
/// `out[m * GEMM_TILE + t]` = dot(weight row `m`, activation row `t`), `out.len() ==
/// w_rows * GEMM_TILE`.
///
/// Only for weights paired with Q8_0 or Q8_1 activations. Every block's integer dot product
/// is exact, as in the [`DotFn`] for the type; results may differ from it by f32 summation
/// order only (each product `d_w · d_a · isum` is rounded the same way). Panics if the
/// slices do not hold those sizes (a caller bug).
pub type GemmFn = fn(w: &[u8], w_rows: usize, tile: &ActTile<'_>, out: &mut [f32]);

/// The most tiles one [`GemmTilesFn`] call takes.
pub const MAX_GEMM_TILES: usize = 16;

/// A [`GemmFn`] over several tiles: the same `w_rows` weight rows against each of `tiles`
/// (1 ..= [`MAX_GEMM_TILES`] of them), written token-major straight into the caller's
/// output: dot(weight row `m`, row `t` of `tiles[i]`) goes to
/// `*out.add((i * GEMM_TILE + t) * out_stride + m)` (`out_stride >= w_rows`; the matmul
/// passes its output matrix, so there is no copy). Each product gets exactly the bits the
/// type's [`GemmFn`] gives it; the gain is that every weight block is rearranged for the tile
/// arithmetic once for all the tiles instead of once per tile. Panics if the slices do not
/// hold the sizes of the contract or `out_stride < w_rows` (caller bugs).
///
/// # Safety
/// Every one of those `tiles.len() * GEMM_TILE * w_rows` addresses must be valid for an f32
/// write, and nothing else may read or write them during the call.
pub type GemmTilesFn =
    unsafe fn(w: &[u8], w_rows: usize, tiles: &[ActTile<'_>], out: *mut f32, out_stride: usize);

/// A [`ScaledDotFn`] for weights in the row-interleaved layout of [`crate::interleave`]:
/// `w` holds the whole groups that cover `w_rows` rows (`w.len()` is
/// `w_rows.div_ceil(16) * 16` rows' bytes; padding rows are read and dropped), and `out`
/// is token-major: `out[i * w_rows + m]` = dot(weight row `m`, activation row `i`) for the
/// `out.len() / w_rows` (1 ..= [`MAX_ACT_ROWS`]) activation rows. The activation arguments
/// and the scale table are those of a [`ScaledDotFn`] (with Q8_0's block sums). Every result
/// is bit for bit what the set's [`ScaledDotFn`] gives for the same rows in the file's layout.
pub type InterleavedDotFn = fn(
    w: &[u8],
    w_rows: usize,
    acts: &[u8],
    act_row_bytes: usize,
    act_scales: &[f32],
    scale_stride: usize,
    out: &mut [f32],
);

/// Checks the [`GemmFn`] contract for `w_rows` rows of weight blocks of
/// `w_block_bytes` against a tile of activation blocks of `a_block_bytes`, and returns
/// (bytes per weight row, blocks per row).
///
/// # Panics
/// On any violation: these are caller bugs (the matmul sizes everything from the shapes).
#[cfg(target_arch = "x86_64")]
pub(crate) fn check_gemm_args(
    w: &[u8],
    w_rows: usize,
    w_block_bytes: usize,
    tile: &ActTile<'_>,
    a_block_bytes: usize,
    needs: (bool, bool),
    out: &[f32],
) -> (usize, usize) {
    assert_eq!(out.len(), w_rows * GEMM_TILE, "output length");
    check_gemm_shapes(w, w_rows, w_block_bytes, tile, a_block_bytes, needs)
}

/// [`check_gemm_args`] without the output: the weights and the tile with its tables.
///
/// # Panics
/// On any violation (caller bugs).
#[cfg(target_arch = "x86_64")]
pub(crate) fn check_gemm_shapes(
    w: &[u8],
    w_rows: usize,
    w_block_bytes: usize,
    tile: &ActTile<'_>,
    a_block_bytes: usize,
    needs: (bool, bool),
) -> (usize, usize) {
    assert!(
        w_rows > 0 && w.len().is_multiple_of(w_rows),
        "{} weight bytes do not split into {w_rows} rows",
        w.len()
    );
    let row_bytes = w.len() / w_rows;
    assert!(
        row_bytes.is_multiple_of(w_block_bytes),
        "weight row of {row_bytes} bytes is not a whole number of {w_block_bytes}-byte blocks"
    );
    let n_blocks = row_bytes / w_block_bytes;
    let row_used = n_blocks * a_block_bytes;
    assert!(
        tile.row_stride >= row_used
            && tile.quants.len() >= (GEMM_TILE - 1) * tile.row_stride + row_used,
        "a tile of {} bytes, rows {} apart, cannot hold {GEMM_TILE} rows of {row_used} bytes",
        tile.quants.len(),
        tile.row_stride
    );
    let table = n_blocks * GEMM_TILE;
    let (needs_s, needs_sums) = needs;
    assert!(
        tile.d.len() >= table
            && (!needs_s || tile.s.len() >= table)
            && (!needs_sums || tile.sums.len() >= table),
        "tile tables shorter than {table} entries"
    );
    (row_bytes, n_blocks)
}

/// Quantizes one activation row of f32 values into the blocks of an activation format.
/// `x.len()` is a multiple of the format's block size and `out` is exactly the row's bytes.
pub type QuantizeFn = fn(x: &[f32], out: &mut [u8]);

/// One complete set of kernels: a dot product for every weight type and a quantizer for
/// every activation type.
#[derive(Clone)]
pub struct KernelSet {
    name: &'static str,
    dots: [Option<DotFn>; GgmlType::ID_LIMIT],
    scaled_dots: [Option<ScaledDotFn>; GgmlType::ID_LIMIT],
    gemms: [Option<GemmFn>; GgmlType::ID_LIMIT],
    gemm_tiles: [Option<GemmTilesFn>; GgmlType::ID_LIMIT],
    interleaved: [Option<(InterleavedDotFn, GemmTilesFn)>; GgmlType::ID_LIMIT],
    quantizers: [Option<QuantizeFn>; GgmlType::ID_LIMIT],
}

impl KernelSet {
    /// An empty set named `name`; `scalar::install` fills it.
    pub(crate) fn empty(name: &'static str) -> KernelSet {
        KernelSet {
            name,
            dots: [None; GgmlType::ID_LIMIT],
            scaled_dots: [None; GgmlType::ID_LIMIT],
            gemms: [None; GgmlType::ID_LIMIT],
            gemm_tiles: [None; GgmlType::ID_LIMIT],
            interleaved: [None; GgmlType::ID_LIMIT],
            quantizers: [None; GgmlType::ID_LIMIT],
        }
    }

    /// A short name for logs and benchmarks (`scalar`, `avx2`, `neon-dotprod`, ...).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The dot kernel for weights of type `weight` (paired with its `vec_dot_type`), or
    /// `None` when the type cannot be a weight (activation-only formats such as Q8_K).
    pub fn dot(&self, weight: GgmlType) -> Option<DotFn> {
        self.dots[weight.id() as usize]
    }

    /// The [`ScaledDotFn`] for weights of type `weight`, if this set has one (the matmul
    /// then uses it instead of [`KernelSet::dot`]).
    pub fn scaled_dot(&self, weight: GgmlType) -> Option<ScaledDotFn> {
        self.scaled_dots[weight.id() as usize]
    }

    /// The [`GemmFn`] tile kernel for weights of type `weight`, if this set has one (the
    /// matmul then uses it for every full tile of [`GEMM_TILE`] activation rows).
    pub fn gemm(&self, weight: GgmlType) -> Option<GemmFn> {
        self.gemms[weight.id() as usize]
    }

    /// The [`GemmTilesFn`] for weights of type `weight`, if this set has one (the matmul
    /// then uses it for runs of at least two full tiles).
    pub fn gemm_tiles(&self, weight: GgmlType) -> Option<GemmTilesFn> {
        self.gemm_tiles[weight.id() as usize]
    }

    /// The kernels for weights of type `weight` in the row-interleaved layout of
    /// [`crate::interleave`], if this set has them: the dot for up to [`MAX_ACT_ROWS`]
    /// activation rows and a [`GemmTilesFn`] that reads the interleaved groups as its `w` (1
    /// ..= [`MAX_GEMM_TILES`] tiles, same output and bits as the set's own). When a set has
    /// them, loading a model rearranges such weights once and the matmul uses these.
    pub fn interleaved(&self, weight: GgmlType) -> Option<(InterleavedDotFn, GemmTilesFn)> {
        self.interleaved[weight.id() as usize]
    }

    /// The quantizer that produces activation rows of type `act`, if `act` is one.
    pub fn quantize(&self, act: GgmlType) -> Option<QuantizeFn> {
        self.quantizers[act.id() as usize]
    }

    /// Sets the dot kernel for `weight`.
    pub(crate) fn set_dot(&mut self, weight: GgmlType, f: DotFn) {
        self.dots[weight.id() as usize] = Some(f);
    }

    /// Sets the scaled dot kernel for `weight` (only the AVX2 set has such kernels).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn set_scaled_dot(&mut self, weight: GgmlType, f: ScaledDotFn) {
        self.scaled_dots[weight.id() as usize] = Some(f);
    }

    /// Sets the GEMM tile kernel for `weight` (only the AVX2 set has such kernels).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn set_gemm(&mut self, weight: GgmlType, f: GemmFn) {
        self.gemms[weight.id() as usize] = Some(f);
    }

    /// Sets the several-tile GEMM kernel for `weight` (only the AVX-512 set has such
    /// kernels).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn set_gemm_tiles(&mut self, weight: GgmlType, f: GemmTilesFn) {
        self.gemm_tiles[weight.id() as usize] = Some(f);
    }

    /// Sets the interleaved-layout kernels for `weight` (only the AVX-512 set has them).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn set_interleaved(
        &mut self,
        weight: GgmlType,
        dot: InterleavedDotFn,
        tiles: GemmTilesFn,
    ) {
        self.interleaved[weight.id() as usize] = Some((dot, tiles));
    }

    /// Sets the activation quantizer for `act`.
    pub(crate) fn set_quantize(&mut self, act: GgmlType, f: QuantizeFn) {
        self.quantizers[act.id() as usize] = Some(f);
    }

    /// Renames the set (done by a SIMD module once it has installed its kernels).
    pub(crate) fn set_name(&mut self, name: &'static str) {
        self.name = name;
    }
}

/// The portable reference kernels, always available. Tests use this as the oracle.
pub fn scalar() -> &'static KernelSet {
    static SCALAR: OnceLock<KernelSet> = OnceLock::new();
    SCALAR.get_or_init(|| {
        let mut set = KernelSet::empty("scalar");
        crate::scalar::install(&mut set);
        set
    })
}

/// The best kernels for this CPU, chosen on first use and cached.
///
/// Setting the environment variable `OPENWEIGHT_KERNELS=scalar` before first use forces the
/// scalar reference (for debugging and for comparing speed); `OPENWEIGHT_KERNELS=avx2` caps
/// an x86-64 CPU at the AVX2 set (no AVX-512 VNNI kernels), so both tiers can be tested and
/// timed on one machine.
pub fn best() -> &'static KernelSet {
    static BEST: OnceLock<KernelSet> = OnceLock::new();
    BEST.get_or_init(|| {
        let mut set = scalar().clone();
        if std::env::var("OPENWEIGHT_KERNELS").as_deref() == Ok("scalar") {
            return set;
        }
        install_simd(&mut set);
        set
    })
}

#[cfg(target_arch = "x86_64")]
fn install_simd(set: &mut KernelSet) {
    if std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
    {
        crate::avx2::install(set);
        let capped = std::env::var("OPENWEIGHT_KERNELS").as_deref() == Ok("avx2");
        if !capped && avx512_vnni_detected() {
            crate::avx512::install(set);
        }
    }
}

/// Whether the CPU has every feature the AVX-512 VNNI kernels need.
#[cfg(target_arch = "x86_64")]
fn avx512_vnni_detected() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("avx512vnni")
}

#[cfg(target_arch = "aarch64")]
fn install_simd(set: &mut KernelSet) {
    if std::arch::is_aarch64_feature_detected!("neon") {
        let dotprod = std::arch::is_aarch64_feature_detected!("dotprod");
        crate::neon::install(set, dotprod);
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn install_simd(_set: &mut KernelSet) {}
