//! AVX2 (+FMA, F16C) kernels: a dot product for every weight type, each paired with its
//! `vec_dot_type`, following the [`crate::dispatch::DotFn`] contract.
//!
//! Every kernel is generic over the number of activation rows `N` (1 ..= 8): a weight block
//! is unpacked once and multiplied against all `N` rows, each with its own accumulators,
//! which is what makes prompt processing (many activation rows) fast.
//!
//! Families: [`float`] (F32, F16, BF16), [`legacy`] (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
//! IQ4_NL), [`kquants`] (Q2_K ... Q6_K, IQ4_XS); [`gemm`] has 8-activation-row GEMM tiles
//! for Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K and Q5_K; [`quantize`] holds the Q8_0, Q8_1 and
//! Q8_K activation quantizers, bit-identical to the scalar ones (F32/F16/BF16 activations
//! keep the scalar converters). The SIMD functions are
//! `#[target_feature(enable = "avx2,fma,f16c")] unsafe fn`s; the only way to reach them is
//! through the private safe wrappers installed here, and [`install`] is only called by
//! `dispatch` after it detected all three features.

mod float;
mod gemm;
mod kquants;
mod legacy;
pub(crate) mod legacy_layout;
mod quantize;
pub(crate) mod util;

use crate::dispatch::KernelSet;
use crate::types::GgmlType;

/// Installs the AVX2 kernels. Only called by `dispatch` after it detected avx2, fma and f16c.
pub(crate) fn install(set: &mut KernelSet) {
    set.set_dot(GgmlType::F32, float::dot_f32);
    set.set_dot(GgmlType::F16, float::dot_f16);
    set.set_dot(GgmlType::BF16, float::dot_bf16);
    set.set_dot(GgmlType::Q4_0, legacy::dot_q4_0);
    set.set_dot(GgmlType::Q4_1, legacy::dot_q4_1);
    set.set_dot(GgmlType::Q5_0, legacy::dot_q5_0);
    set.set_dot(GgmlType::Q5_1, legacy::dot_q5_1);
    set.set_dot(GgmlType::Q8_0, legacy::dot_q8_0);
    set.set_dot(GgmlType::IQ4_NL, legacy::dot_iq4_nl);
    set.set_dot(GgmlType::Q2_K, kquants::dot_q2_k);
    set.set_dot(GgmlType::Q3_K, kquants::dot_q3_k);
    set.set_dot(GgmlType::Q4_K, kquants::dot_q4_k);
    set.set_dot(GgmlType::Q5_K, kquants::dot_q5_k);
    set.set_dot(GgmlType::Q6_K, kquants::dot_q6_k);
    set.set_dot(GgmlType::IQ4_XS, kquants::dot_iq4_xs);
    set.set_scaled_dot(GgmlType::Q4_0, legacy::dot_q4_0_scaled);
    set.set_scaled_dot(GgmlType::Q4_1, legacy::dot_q4_1_scaled);
    set.set_scaled_dot(GgmlType::Q5_0, legacy::dot_q5_0_scaled);
    set.set_scaled_dot(GgmlType::Q5_1, legacy::dot_q5_1_scaled);
    set.set_scaled_dot(GgmlType::Q8_0, legacy::dot_q8_0_scaled);
    set.set_scaled_dot(GgmlType::IQ4_NL, legacy::dot_iq4_nl_scaled);
    set.set_gemm(GgmlType::Q4_0, gemm::gemm_q4_0);
    set.set_gemm(GgmlType::Q4_1, gemm::gemm_q4_1);
    set.set_gemm(GgmlType::Q5_0, gemm::gemm_q5_0);
    set.set_gemm(GgmlType::Q5_1, gemm::gemm_q5_1);
    set.set_gemm(GgmlType::Q8_0, gemm::gemm_q8_0);
    set.set_gemm(GgmlType::Q4_K, gemm::gemm_q4_k);
    set.set_gemm(GgmlType::Q5_K, gemm::gemm_q5_k);
    set.set_quantize(GgmlType::Q8_0, quantize::quantize_q8_0);
    set.set_quantize(GgmlType::Q8_1, quantize::quantize_q8_1);
    set.set_quantize(GgmlType::Q8_K, quantize::quantize_q8_k);
    set.set_name("avx2");
}
