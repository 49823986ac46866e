//! Scalar dequantization reproduces the reference runtime bit for bit.
//!
//! Golden source: `fixtures/golden/quants.gguf` (see `fixtures/golden/README.md`, "Quantization
//! zoo"): for each type, `TYPE.q` holds 512 rows x 256 columns of blocks quantized by the
//! reference, and `TYPE.f32` the values the reference's own dequantizer gives for them.
//!
//! The same data also pins down our simple quantizers: quantizing `TYPE.f32` again must give
//! back the reference's blocks byte for byte (the reference's blocks are a fixed point of its
//! quantizer: the extreme values sit exactly on the codes that define the scale).

use openweight::gguf::GgufFile;
use openweight::kernels::{format, GgmlType};

const QUANTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/golden/quants.gguf");

/// The types the zoo holds (every type the reference can store as weights that we support).
const ZOO: [GgmlType; 14] = [
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
];

/// Dequantizes `TYPE.q` with the format table and compares every value's bits with `TYPE.f32`.
fn assert_bit_exact(ty: GgmlType) {
    let file = GgufFile::open(QUANTS).expect("fixtures/golden/quants.gguf opens");
    let name = ty.name();
    let q = file
        .tensor(&format!("{name}.q"))
        .unwrap_or_else(|| panic!("{name}.q in the zoo"));
    let r = file
        .tensor(&format!("{name}.f32"))
        .unwrap_or_else(|| panic!("{name}.f32 in the zoo"));
    assert_eq!(q.type_id, ty.id(), "{name}.q has the type it is named for");
    assert_eq!(r.type_id, GgmlType::F32.id(), "{name}.f32 is F32");
    assert_eq!(q.ne, r.ne, "{name}: both tensors have the same shape");
    let cols = q.ne[0] as usize;
    let n = q.n_elements() as usize;

    let f = format(ty);
    let quantized = file.tensor_data(q);
    assert_eq!(
        quantized.len(),
        n / cols * f.row_bytes(cols),
        "{name}.q size"
    );
    let expected: Vec<f32> = file
        .tensor_data(r)
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(expected.len(), n);

    let mut ours = vec![0f32; n];
    (f.dequantize)(quantized, &mut ours);

    let mismatches: Vec<usize> = (0..n)
        .filter(|&i| ours[i].to_bits() != expected[i].to_bits())
        .collect();
    if let Some(&i) = mismatches.first() {
        panic!(
            "{name}: {} of {n} values differ from the reference; first at row {} col {}: \
             ours {:e} ({:#010x}), reference {:e} ({:#010x})",
            mismatches.len(),
            i / cols,
            i % cols,
            ours[i],
            ours[i].to_bits(),
            expected[i],
            expected[i].to_bits()
        );
    }
}

/// Quantizes `TYPE.f32` with the format table and compares the bytes with `TYPE.q`.
fn assert_requantizes_to_the_reference_blocks(ty: GgmlType) {
    let file = GgufFile::open(QUANTS).expect("fixtures/golden/quants.gguf opens");
    let name = ty.name();
    let q = file
        .tensor(&format!("{name}.q"))
        .unwrap_or_else(|| panic!("{name}.q in the zoo"));
    let r = file
        .tensor(&format!("{name}.f32"))
        .unwrap_or_else(|| panic!("{name}.f32 in the zoo"));
    let values: Vec<f32> = file
        .tensor_data(r)
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let f = format(ty);
    let quantize = f
        .quantize
        .unwrap_or_else(|| panic!("{name} has a quantizer"));
    let mut ours = vec![0u8; f.row_bytes(values.len())];
    quantize(&values, &mut ours);
    let reference = file.tensor_data(q);
    assert_eq!(ours.len(), reference.len(), "{name}.q size");
    let differing: Vec<usize> = ours
        .chunks_exact(f.block_bytes)
        .zip(reference.chunks_exact(f.block_bytes))
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, _)| i)
        .collect();
    if let Some(&i) = differing.first() {
        let block = i * f.block_bytes..(i + 1) * f.block_bytes;
        panic!(
            "{name}: {} of {} blocks differ; first is block {i}: ours {:02x?}, reference {:02x?}",
            differing.len(),
            reference.len() / f.block_bytes,
            &ours[block.clone()],
            &reference[block]
        );
    }
}

#[test]
fn the_zoo_holds_exactly_the_expected_types() {
    let file = GgufFile::open(QUANTS).expect("fixtures/golden/quants.gguf opens");
    let mut found: Vec<&str> = file
        .tensors()
        .iter()
        .filter_map(|t| t.name.strip_suffix(".q"))
        .collect();
    found.sort_unstable();
    let mut expected: Vec<&str> = ZOO.iter().map(|t| t.name()).collect();
    expected.sort_unstable();
    assert_eq!(found, expected);
}

macro_rules! bit_exact {
    ($($test:ident: $ty:ident,)*) => {$(
        #[test]
        fn $test() {
            assert_bit_exact(GgmlType::$ty);
        }
    )*};
}

bit_exact! {
    f16_dequantizes_bit_exactly: F16,
    bf16_dequantizes_bit_exactly: BF16,
    q4_0_dequantizes_bit_exactly: Q4_0,
    q4_1_dequantizes_bit_exactly: Q4_1,
    q5_0_dequantizes_bit_exactly: Q5_0,
    q5_1_dequantizes_bit_exactly: Q5_1,
    q8_0_dequantizes_bit_exactly: Q8_0,
    q2_k_dequantizes_bit_exactly: Q2_K,
    q3_k_dequantizes_bit_exactly: Q3_K,
    q4_k_dequantizes_bit_exactly: Q4_K,
    q5_k_dequantizes_bit_exactly: Q5_K,
    q6_k_dequantizes_bit_exactly: Q6_K,
    iq4_nl_dequantizes_bit_exactly: IQ4_NL,
    iq4_xs_dequantizes_bit_exactly: IQ4_XS,
}

macro_rules! requantizes {
    ($($test:ident: $ty:ident,)*) => {$(
        #[test]
        fn $test() {
            assert_requantizes_to_the_reference_blocks(GgmlType::$ty);
        }
    )*};
}

requantizes! {
    f16_quantizer_reproduces_the_reference_blocks: F16,
    bf16_quantizer_reproduces_the_reference_blocks: BF16,
    q4_0_quantizer_reproduces_the_reference_blocks: Q4_0,
    q4_1_quantizer_reproduces_the_reference_blocks: Q4_1,
    q5_0_quantizer_reproduces_the_reference_blocks: Q5_0,
    q5_1_quantizer_reproduces_the_reference_blocks: Q5_1,
    q8_0_quantizer_reproduces_the_reference_blocks: Q8_0,
}
