//! NEON kernels against an independent oracle written from the format specification
//! (kernels guide §1.3-1.4 and §2.2): dequantize each block to `f64`, then dot. Both
//! integer paths are checked (the dotprod one only when the CPU has it), for every row
//! count 1..=8, with misaligned rows and a row stride longer than the row.

use super::*;
use crate::dispatch::{DotFn, KernelSet};
use half::{bf16, f16};

/// Deterministic xorshift64* generator: tests need varied bytes, not statistical quality.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn byte(&mut self) -> u8 {
        (self.next_u64() >> 56) as u8
    }

    /// Uniform in `[lo, hi)`.
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
    }

    /// A signed quant in -127..=127, sometimes -128 (never produced by our quantizers, but
    /// the kernels must still be exact for it).
    fn quant(&mut self) -> i8 {
        match self.byte() {
            0 => -128,
            b => (b as i32 % 255 - 127) as i8,
        }
    }

    /// A block scale as binary16: mostly normal values of either sign spanning several
    /// octaves, sometimes subnormal, sometimes zero.
    fn scale_f16(&mut self) -> f16 {
        let sign = if self.byte() & 1 == 0 { 1.0 } else { -1.0 };
        match self.byte() % 16 {
            0 => f16::from_bits(1 + (self.next_u64() % 0x3ff) as u16), // subnormal
            1 => f16::ZERO,
            _ => f16::from_f64(sign * 2f64.powf(self.uniform(-12.0, 0.0))),
        }
    }
}

/// Offsets of the binary16 scale fields inside one weight block, per type.
fn f16_fields(ty: GgmlType) -> &'static [usize] {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 | GgmlType::IQ4_NL => &[0],
        GgmlType::IQ4_XS => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q2_K => &[80, 82],
        GgmlType::Q3_K => &[108],
        GgmlType::Q6_K => &[208],
        other => panic!("{other} has no f16 fields in this table"),
    }
}

/// `(weight block bytes, weight block elements, activation type)` for every weight type.
fn geometry(ty: GgmlType) -> (usize, usize, GgmlType) {
    match ty {
        GgmlType::F32 => (4, 1, GgmlType::F32),
        GgmlType::F16 => (2, 1, GgmlType::F16),
        GgmlType::BF16 => (2, 1, GgmlType::BF16),
        GgmlType::Q4_0 => (18, 32, GgmlType::Q8_0),
        GgmlType::Q4_1 => (20, 32, GgmlType::Q8_1),
        GgmlType::Q5_0 => (22, 32, GgmlType::Q8_0),
        GgmlType::Q5_1 => (24, 32, GgmlType::Q8_1),
        GgmlType::Q8_0 => (34, 32, GgmlType::Q8_0),
        GgmlType::IQ4_NL => (18, 32, GgmlType::Q8_0),
        GgmlType::Q2_K => (84, 256, GgmlType::Q8_K),
        GgmlType::Q3_K => (110, 256, GgmlType::Q8_K),
        GgmlType::Q4_K => (144, 256, GgmlType::Q8_K),
        GgmlType::Q5_K => (176, 256, GgmlType::Q8_K),
        GgmlType::Q6_K => (210, 256, GgmlType::Q8_K),
        GgmlType::IQ4_XS => (136, 256, GgmlType::Q8_K),
        other => panic!("{other} is not a weight type"),
    }
}

/// Every type that can be a weight.
const WEIGHT_TYPES: [GgmlType; 15] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::IQ4_NL,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_XS,
];

/// A random weight row of `n_elems` elements: random quant bytes, sensible scales.
fn weight_row(ty: GgmlType, n_elems: usize, rng: &mut Rng) -> Vec<u8> {
    let (bb, be, _) = geometry(ty);
    let mut row: Vec<u8> = (0..n_elems / be * bb).map(|_| rng.byte()).collect();
    match ty {
        GgmlType::F32 => {
            for c in row.chunks_exact_mut(4) {
                c.copy_from_slice(&(rng.uniform(-2.0, 2.0) as f32).to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for c in row.chunks_exact_mut(2) {
                c.copy_from_slice(&f16::from_f64(rng.uniform(-2.0, 2.0)).to_le_bytes());
            }
        }
        GgmlType::BF16 => {
            for c in row.chunks_exact_mut(2) {
                c.copy_from_slice(&bf16::from_f64(rng.uniform(-2.0, 2.0)).to_le_bytes());
            }
        }
        _ => {
            for block in row.chunks_exact_mut(bb) {
                for &o in f16_fields(ty) {
                    block[o..o + 2].copy_from_slice(&rng.scale_f16().to_le_bytes());
                }
            }
        }
    }
    row
}

/// A random activation row of `n_elems` elements in format `act`, with consistent `s`
/// (Q8_1) and `bsums` (Q8_K) fields.
fn act_row(act: GgmlType, n_elems: usize, rng: &mut Rng) -> Vec<u8> {
    let mut row = Vec::new();
    match act {
        GgmlType::F32 => {
            for _ in 0..n_elems {
                row.extend((rng.uniform(-2.0, 2.0) as f32).to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for _ in 0..n_elems {
                row.extend(f16::from_f64(rng.uniform(-2.0, 2.0)).to_le_bytes());
            }
        }
        GgmlType::BF16 => {
            for _ in 0..n_elems {
                row.extend(bf16::from_f64(rng.uniform(-2.0, 2.0)).to_le_bytes());
            }
        }
        GgmlType::Q8_0 | GgmlType::Q8_1 => {
            for _ in 0..n_elems / 32 {
                let d = f16::from_f64(rng.uniform(1e-4, 0.05));
                let qs: Vec<i8> = (0..32).map(|_| rng.quant()).collect();
                row.extend(d.to_le_bytes());
                if act == GgmlType::Q8_1 {
                    let sum: i32 = qs.iter().map(|&q| q as i32).sum();
                    row.extend(f16::from_f64(d.to_f64() * sum as f64).to_le_bytes());
                }
                row.extend(qs.iter().map(|&q| q as u8));
            }
        }
        GgmlType::Q8_K => {
            for _ in 0..n_elems / 256 {
                let sign = if rng.byte() & 1 == 0 { 1.0 } else { -1.0 };
                let d = (sign * rng.uniform(1e-4, 0.05)) as f32;
                let qs: Vec<i8> = (0..256).map(|_| rng.quant()).collect();
                row.extend(d.to_le_bytes());
                row.extend(qs.iter().map(|&q| q as u8));
                for group in qs.chunks_exact(16) {
                    let sum: i32 = group.iter().map(|&q| q as i32).sum();
                    row.extend((sum as i16).to_le_bytes());
                }
            }
        }
        other => panic!("{other} is not an activation type"),
    }
    row
}

fn f16_at(b: &[u8], o: usize) -> f64 {
    f16::from_le_bytes([b[o], b[o + 1]]).to_f64()
}

/// The 16-value IQ4 code book, straight from the specification.
const IQ4: [f64; 16] = [
    -127.0, -104.0, -83.0, -65.0, -49.0, -35.0, -22.0, -10.0, 1.0, 13.0, 25.0, 38.0, 53.0, 69.0,
    89.0, 113.0,
];

/// Dequantizes one weight block. For Q4_1/Q5_1 the minimum `m` is returned separately
/// (and not added): the dot specification pairs it with the activation's stored `s`.
fn dequant_block(ty: GgmlType, b: &[u8]) -> (Vec<f64>, f64) {
    let mut x = vec![0f64; geometry(ty).1];
    let mut min = 0.0;
    let nib = |qs: &[u8], e: usize| if e < 16 { qs[e] & 15 } else { qs[e - 16] >> 4 } as f64;
    match ty {
        GgmlType::F32 => x[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
        GgmlType::F16 => x[0] = f16_at(b, 0),
        GgmlType::BF16 => x[0] = bf16::from_le_bytes([b[0], b[1]]).to_f64(),
        GgmlType::Q4_0 => (0..32).for_each(|e| x[e] = f16_at(b, 0) * (nib(&b[2..], e) - 8.0)),
        GgmlType::Q4_1 => {
            min = f16_at(b, 2);
            (0..32).for_each(|e| x[e] = f16_at(b, 0) * nib(&b[4..], e));
        }
        GgmlType::Q5_0 | GgmlType::Q5_1 => {
            let has_min = ty == GgmlType::Q5_1;
            let (qh_at, qs_at) = if has_min { (4, 8) } else { (2, 6) };
            let qh = u32::from_le_bytes(b[qh_at..qh_at + 4].try_into().unwrap());
            for (e, xe) in x.iter_mut().enumerate() {
                let q = nib(&b[qs_at..], e) + 16.0 * ((qh >> e) & 1) as f64;
                *xe = f16_at(b, 0) * if has_min { q } else { q - 16.0 };
            }
            if has_min {
                min = f16_at(b, 2);
            }
        }
        GgmlType::Q8_0 => (0..32).for_each(|e| x[e] = f16_at(b, 0) * (b[2 + e] as i8) as f64),
        GgmlType::IQ4_NL => {
            (0..32).for_each(|e| x[e] = f16_at(b, 0) * IQ4[nib(&b[2..], e) as usize]);
        }
        GgmlType::Q2_K => {
            let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
            for h in 0..2 {
                for j in 0..4 {
                    for l in 0..32 {
                        let e = 128 * h + 32 * j + l;
                        let q = ((b[16 + 32 * h + l] >> (2 * j)) & 3) as f64;
                        let sc = b[e / 16];
                        x[e] = d * (sc & 15) as f64 * q - dmin * (sc >> 4) as f64;
                    }
                }
            }
        }
        GgmlType::Q3_K => {
            let s = &b[96..108];
            let mut scales = [0i32; 16];
            for k in 0..4 {
                scales[k] = ((s[k] & 15) | (s[8 + k] & 3) << 4) as i32;
                scales[4 + k] = ((s[4 + k] & 15) | ((s[8 + k] >> 2) & 3) << 4) as i32;
                scales[8 + k] = ((s[k] >> 4) | ((s[8 + k] >> 4) & 3) << 4) as i32;
                scales[12 + k] = ((s[4 + k] >> 4) | ((s[8 + k] >> 6) & 3) << 4) as i32;
            }
            let d = f16_at(b, 108);
            for h in 0..2 {
                for j in 0..4 {
                    for l in 0..32 {
                        let e = 128 * h + 32 * j + l;
                        let low = ((b[32 + 32 * h + l] >> (2 * j)) & 3) as i32;
                        let high = (b[l] >> (4 * h + j)) & 1;
                        let q = low - if high == 1 { 0 } else { 4 };
                        x[e] = d * (scales[e / 16] - 32) as f64 * q as f64;
                    }
                }
            }
        }
        GgmlType::Q4_K | GgmlType::Q5_K => {
            let five = ty == GgmlType::Q5_K;
            let (d, dmin, s) = (f16_at(b, 0), f16_at(b, 2), &b[4..16]);
            let qs = if five { &b[48..176] } else { &b[16..144] };
            let sc_m = |i: usize| {
                if i < 4 {
                    (s[i] & 63, s[i + 4] & 63)
                } else {
                    (
                        (s[i + 4] & 0xF) | ((s[i - 4] >> 6) << 4),
                        (s[i + 4] >> 4) | ((s[i] >> 6) << 4),
                    )
                }
            };
            for c in 0..4 {
                for l in 0..32 {
                    for (half, e) in [(0, 64 * c + l), (1, 64 * c + 32 + l)] {
                        let byte = qs[32 * c + l];
                        let mut q = if half == 0 { byte & 15 } else { byte >> 4 } as f64;
                        if five {
                            q += 16.0 * ((b[16 + l] >> (2 * c + half)) & 1) as f64;
                        }
                        let (sc, m) = sc_m(2 * c + half);
                        x[e] = d * sc as f64 * q - dmin * m as f64;
                    }
                }
            }
        }
        GgmlType::Q6_K => {
            let d = f16_at(b, 208);
            for h in 0..2 {
                let (ql, qh) = (&b[64 * h..], &b[128 + 32 * h..]);
                for l in 0..32 {
                    let q = [
                        (ql[l] & 15) | (qh[l] & 3) << 4,
                        (ql[l + 32] & 15) | ((qh[l] >> 2) & 3) << 4,
                        (ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4,
                        (ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4,
                    ];
                    for (k, q) in q.iter().enumerate() {
                        let e = 128 * h + l + 32 * k;
                        x[e] = d * (b[192 + e / 16] as i8) as f64 * (*q as f64 - 32.0);
                    }
                }
            }
        }
        GgmlType::IQ4_XS => {
            let d = f16_at(b, 0);
            let scales_h = u16::from_le_bytes([b[2], b[3]]);
            for g in 0..8 {
                let low = (b[4 + g / 2] >> (4 * (g % 2))) & 15;
                let high = ((scales_h >> (2 * g)) & 3) as u8;
                let dl = d * ((low | high << 4) as f64 - 32.0);
                let qs = &b[8 + 16 * g..8 + 16 * g + 16];
                (0..32).for_each(|e| x[32 * g + e] = dl * IQ4[nib(qs, e) as usize]);
            }
        }
        other => panic!("{other} is not a weight type"),
    }
    (x, min)
}

/// Dequantizes one activation block: its values and (Q8_1 only) its stored `s`.
fn dequant_act_block(act: GgmlType, b: &[u8]) -> (Vec<f64>, f64) {
    match act {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => dequant_block(act, b),
        GgmlType::Q8_0 => (
            (0..32)
                .map(|e| f16_at(b, 0) * (b[2 + e] as i8) as f64)
                .collect(),
            0.0,
        ),
        GgmlType::Q8_1 => (
            (0..32)
                .map(|e| f16_at(b, 0) * (b[4 + e] as i8) as f64)
                .collect(),
            f16_at(b, 2),
        ),
        GgmlType::Q8_K => {
            let d = f32::from_le_bytes(b[0..4].try_into().unwrap()) as f64;
            ((0..256).map(|e| d * (b[4 + e] as i8) as f64).collect(), 0.0)
        }
        other => panic!("{other} is not an activation type"),
    }
}

fn act_block_bytes(act: GgmlType) -> usize {
    match act {
        GgmlType::F32 => 4,
        GgmlType::F16 | GgmlType::BF16 => 2,
        GgmlType::Q8_0 => 34,
        GgmlType::Q8_1 => 36,
        GgmlType::Q8_K => 292,
        other => panic!("{other} is not an activation type"),
    }
}

/// The specified dot product and the sum of absolute terms (the scale of rounding error).
fn oracle(ty: GgmlType, w: &[u8], a: &[u8]) -> (f64, f64) {
    let (bb, _, act) = geometry(ty);
    let abb = act_block_bytes(act);
    let (mut dot, mut abs) = (0f64, 0f64);
    for (wb, ab) in w.chunks_exact(bb).zip(a.chunks_exact(abb)) {
        let (x, m) = dequant_block(ty, wb);
        let (y, s) = dequant_act_block(act, ab);
        for (xi, yi) in x.iter().zip(&y) {
            dot += xi * yi;
            abs += (xi * yi).abs();
        }
        dot += m * s;
        abs += (m * s).abs();
    }
    (dot, abs)
}

/// Elements per row used for `ty`: several blocks, and for floats a length that leaves a
/// tail after the 8-wide loop.
fn n_elems(ty: GgmlType) -> usize {
    match geometry(ty).1 {
        1 => 77,
        32 => 32 * 7,
        _ => 256 * 3,
    }
}

/// Runs `dot` on `n_rows` random activation rows laid out at an odd offset with a padded
/// stride, and compares every output with the oracle.
fn check_against_oracle(ty: GgmlType, dot: DotFn, n_rows: usize, seed: u64) {
    let mut rng = Rng(seed);
    let n = n_elems(ty);
    let act = geometry(ty).2;
    // Misalign the weight row by one byte.
    let mut w_buf = vec![0u8; 1];
    w_buf.extend(weight_row(ty, n, &mut rng));
    let w = &w_buf[1..];
    let rows: Vec<Vec<u8>> = (0..n_rows).map(|_| act_row(act, n, &mut rng)).collect();
    let stride = rows[0].len() + 3;
    let mut a_buf = vec![0xAAu8; 1 + n_rows * stride];
    for (r, row) in rows.iter().enumerate() {
        a_buf[1 + r * stride..1 + r * stride + row.len()].copy_from_slice(row);
    }
    let mut out = vec![f32::NAN; n_rows];
    dot(w, &a_buf[1..], stride, &mut out);
    for (r, row) in rows.iter().enumerate() {
        let (want, abs) = oracle(ty, w, row);
        let tol = 1e-5 * abs + 1e-30;
        assert!(
            (out[r] as f64 - want).abs() <= tol,
            "{ty} row {r} of {n_rows}: got {}, want {want} (tolerance {tol})",
            out[r]
        );
    }
}

/// The kernel sets under test on this CPU: always baseline NEON, plus dotprod if present.
fn kernel_sets() -> Vec<KernelSet> {
    let mut sets = Vec::new();
    let mut neon = KernelSet::empty("test");
    install(&mut neon, false);
    sets.push(neon);
    if std::arch::is_aarch64_feature_detected!("dotprod") {
        let mut sdot = KernelSet::empty("test");
        install(&mut sdot, true);
        sets.push(sdot);
    } else {
        eprintln!("NOTE: this CPU has no dotprod; only the baseline NEON kernels are tested");
    }
    sets
}

#[test]
fn every_weight_type_matches_the_specification_for_one_to_eight_rows() {
    for set in kernel_sets() {
        for (t, ty) in WEIGHT_TYPES.into_iter().enumerate() {
            let dot = set
                .dot(ty)
                .unwrap_or_else(|| panic!("{} lacks {ty}", set.name()));
            for n_rows in 1..=MAX_ACT_ROWS {
                check_against_oracle(ty, dot, n_rows, 0x9e37_79b9 + (t * 16 + n_rows) as u64);
            }
        }
    }
}

#[test]
fn rows_of_one_block_and_of_many_blocks_both_match() {
    for set in kernel_sets() {
        for ty in WEIGHT_TYPES {
            let dot = set.dot(ty).unwrap();
            for seed in 1..=4 {
                check_against_oracle(ty, dot, 1 + seed as usize % 3, seed * 7919);
            }
        }
    }
}

#[test]
fn install_names_the_set_after_the_integer_path() {
    let mut set = KernelSet::empty("test");
    install(&mut set, true);
    assert_eq!(set.name(), "neon-dotprod");
    install(&mut set, false);
    assert_eq!(set.name(), "neon");
}

#[test]
fn install_provides_every_weight_type_and_no_activation_only_type() {
    for dotprod in [false, true] {
        let mut set = KernelSet::empty("test");
        install(&mut set, dotprod);
        for ty in WEIGHT_TYPES {
            assert!(set.dot(ty).is_some(), "{ty} missing (dotprod {dotprod})");
        }
        assert!(set.dot(GgmlType::Q8_1).is_none());
        assert!(set.dot(GgmlType::Q8_K).is_none());
    }
}

#[test]
fn an_empty_row_gives_zero() {
    for set in kernel_sets() {
        for ty in WEIGHT_TYPES {
            let mut out = [f32::NAN; 3];
            set.dot(ty).unwrap()(&[], &[], 0, &mut out);
            assert_eq!(out, [0.0; 3], "{ty}");
        }
    }
}

#[test]
fn extreme_quants_do_not_overflow_the_integer_accumulators() {
    // All-ones weight bytes give the largest magnitudes of most formats (nibbles 15, Q8_0
    // -1, Q6_K 63, ...), against activations of -128: the worst case for i16 products.
    for set in kernel_sets() {
        for ty in WEIGHT_TYPES.into_iter().filter(|t| geometry(*t).1 > 1) {
            let (bb, be, act) = geometry(ty);
            let n = 2 * be.max(256);
            for fill in [0xFFu8, 0x80, 0x7F] {
                let mut w = vec![fill; n / be * bb];
                for block in w.chunks_exact_mut(bb) {
                    for &o in f16_fields(ty) {
                        block[o..o + 2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
                    }
                }
                let mut rng = Rng(fill as u64);
                let mut a = act_row(act, n, &mut rng);
                let abb = act_block_bytes(act);
                for block in a.chunks_exact_mut(abb) {
                    let (qs, sums) = match act {
                        GgmlType::Q8_0 => (2..34, None),
                        GgmlType::Q8_1 => (4..36, Some(2)),
                        _ => (4..260, None),
                    };
                    block[qs].fill(0x80);
                    if let Some(o) = sums {
                        let s = f16_at(block, 0) * -128.0 * 32.0;
                        block[o..o + 2].copy_from_slice(&f16::from_f64(s).to_le_bytes());
                    }
                    if act == GgmlType::Q8_K {
                        for k in 0..16 {
                            block[260 + 2 * k..262 + 2 * k]
                                .copy_from_slice(&(-2048i16).to_le_bytes());
                        }
                    }
                }
                let mut out = [0f32];
                set.dot(ty).unwrap()(&w, &a, a.len(), &mut out);
                let (want, abs) = oracle(ty, &w, &a);
                assert!(
                    (out[0] as f64 - want).abs() <= 1e-5 * abs + 1e-30,
                    "{ty} fill {fill:#x}: got {}, want {want}",
                    out[0]
                );
            }
        }
    }
}

#[test]
#[should_panic(expected = "activations too short")]
fn short_activations_are_a_caller_bug_that_panics() {
    let mut set = KernelSet::empty("test");
    install(&mut set, false);
    let w = vec![0u8; 18 * 2];
    let a = vec![0u8; 34 * 2 - 1];
    set.dot(GgmlType::Q4_0).unwrap()(&w, &a, 68, &mut [0.0]);
}

#[test]
fn zero_activation_rows_need_no_activation_bytes() {
    // As in the scalar set: no rows means nothing to read, so empty `acts` is no error.
    for set in kernel_sets() {
        for ty in WEIGHT_TYPES {
            let w = weight_row(ty, n_elems(ty), &mut Rng(7));
            set.dot(ty).unwrap()(&w, &[], 0, &mut []);
        }
    }
}

#[test]
#[should_panic(expected = "not whole")]
fn a_partial_weight_block_is_a_caller_bug_that_panics() {
    let mut set = KernelSet::empty("test");
    install(&mut set, false);
    set.dot(GgmlType::Q4_0).unwrap()(&[0u8; 19], &[0u8; 68], 34, &mut [0.0]);
}

#[test]
#[should_panic(expected = "activation rows")]
fn more_than_eight_rows_is_a_caller_bug_that_panics() {
    let mut set = KernelSet::empty("test");
    install(&mut set, false);
    set.dot(GgmlType::F32).unwrap()(&[], &[], 0, &mut [0.0; MAX_ACT_ROWS + 1]);
}
