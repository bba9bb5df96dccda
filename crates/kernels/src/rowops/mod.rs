//! Row ops of the forward pass: `exp` over slices and what is built on it,
//! [`softmax`] (attention scores) and [`silu_mul`] (the SwiGLU gate), and
//! [`rmsnorm`]; f16 <-> f32 conversion.
//!
//! One name per op: `op` dispatches on the machine's ISA ([`Cpu`]) and
//! `op_scalar` (in `scalar.rs`) is its reference, also taken without AVX2;
//! the AVX-512F and AVX2 versions sit in `x86.rs`.
//!
//! The SIMD exp (AVX-512F, AVX2 + FMA) reduces `x = n ln2 + r` with
//! `|r| <= ln2 / 2` (Cody-Waite, two fused steps), evaluates a degree-7
//! polynomial for `e^r` (SLEEF's `expf` coefficients) by Horner's rule with
//! fused multiply-adds, and scales by `2^n` exactly, rounding once into
//! the subnormal range. It is within 1 ulp of `f32::exp` (a scan of every
//! 13th float in [-104, 89] found 99.5% equal, the rest 1 ulp off);
//! llama.cpp likewise uses its own vector exp, not libm's. Inputs are
//! clamped to `[-104, 89]` first: below, the result rounds to 0 (so
//! `-inf` gives 0); above, to `inf`. NaN stays NaN.
//!
//! Every lane runs the same instructions and a slice's tail goes through the
//! same vector code (masked or padded), so an element's result does not
//! depend on where in a slice it sits: a batch of rows gives the bits of the
//! rows one at a time. Sums (softmax, rmsnorm) are per row, over 16 or 8
//! lanes and then in a fixed order. Without AVX2 the scalar references run:
//! `f32::exp` and left-to-right sums (results then differ from the SIMD
//! paths in the last bits, as the dot products of different ISAs do).

mod scalar;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86;

pub use scalar::{argmax_scalar, exp_scalar, rmsnorm_scalar, silu_mul_scalar, softmax_scalar};

use crate::error::{Error, Result};
use crate::simd::Cpu;
#[cfg(target_arch = "x86_64")]
use crate::simd::Isa;
use half::f16;

/// `x[i] = exp(x[i])`.
pub fn exp_inplace(x: &mut [f32]) {
    exp_with(Cpu::get(), x)
}

/// Softmax in place with an f64 sum (as ggml's): `x[i] = exp(x[i] - max) /
/// sum`, the sum taken over f64 lanes and then reduced in a fixed order.
/// [`softmax_scalar`] (f64 sum, `f32::exp`) is its reference. An empty or
/// all `-inf` slice is left alone.
pub fn softmax(x: &mut [f32]) {
    softmax_with(Cpu::get(), x)
}

/// The SwiGLU gate: `gate[i] = silu(gate[i]) * up[i]`, i.e.
/// `gate[i] / (1 + exp(-gate[i])) * up[i]`; [`silu_mul_scalar`] is its
/// reference. Panics if the lengths differ.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    silu_mul_with(Cpu::get(), gate, up)
}

/// The first index of the largest value of `x`, `None` if every value is
/// -inf or NaN (neither ever wins); [`argmax_scalar`] is its reference. A
/// greedy pick over a vocabulary: the lanes keep their first maximum, then
/// merge by value, ties to the lower index, so the answer is the
/// reference's exactly. (With the sampler's portable 16-lane loop, 8
/// rows' picks over a 49k vocabulary were about 3 % of an 8-sequence
/// step.)
pub fn argmax(x: &[f32]) -> Option<usize> {
    argmax_with(Cpu::get(), x)
}

pub(crate) fn argmax_with(cpu: Cpu, x: &[f32]) -> Option<usize> {
    // Lane indices are u32.
    if x.len() >= u32::MAX as usize - 64 {
        return argmax_scalar(x);
    }
    match cpu.isa() {
        // SAFETY: a Cpu names only an ISA detected on this machine; the
        // length is checked above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::argmax_512(x) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::argmax_256(x) },
        _ => scalar::argmax_lanes(x),
    }
}

/// RMS normalisation: `out[i] = x[i] * (1 / sqrt(mean(x^2) + eps)) * weight[i]`,
/// the squares summed in f64 (exact squares, lane-parallel sums) as ggml
/// sums them in double. [`rmsnorm_scalar`] (sequential f64 sum) is its
/// reference. Panics if the lengths differ.
pub fn rmsnorm(out: &mut [f32], x: &[f32], weight: &[f32], eps: f32) {
    rmsnorm_with(Cpu::get(), out, x, weight, eps)
}

pub(crate) fn rmsnorm_with(cpu: Cpu, out: &mut [f32], x: &[f32], weight: &[f32], eps: f32) {
    assert!(
        out.len() == x.len() && weight.len() == x.len(),
        "rmsnorm of different lengths"
    );
    if x.is_empty() {
        return;
    }
    let ss = match cpu.isa() {
        // SAFETY: a Cpu names only an ISA detected on this machine.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => Some(unsafe { x86::sum_squares_512(x) }),
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => Some(unsafe { x86::sum_squares_256(x) }),
        _ => None,
    };
    match ss {
        Some(ss) => scalar::scale_rows(out, x, weight, ss, eps),
        None => rmsnorm_scalar(out, x, weight, eps),
    }
}

pub(crate) fn exp_with(cpu: Cpu, x: &mut [f32]) {
    match cpu.isa() {
        // SAFETY: a Cpu names only an ISA detected on this machine.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::exp_512(x) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::exp_256(x) },
        _ => exp_scalar(x),
    }
}

pub(crate) fn softmax_with(cpu: Cpu, x: &mut [f32]) {
    match cpu.isa() {
        // SAFETY: a Cpu names only an ISA detected on this machine.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::softmax_512(x) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::softmax_256(x) },
        _ => softmax_scalar(x),
    }
}

pub(crate) fn silu_mul_with(cpu: Cpu, gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "silu_mul of different lengths");
    match cpu.isa() {
        // SAFETY: a Cpu names only an ISA detected on this machine;
        // lengths checked above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::silu_mul_512(gate, up) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::silu_mul_256(gate, up) },
        _ => silu_mul_scalar(gate, up),
    }
}

/// f16 -> f32, element by element (exact).
pub fn f16_to_f32(src: &[f16], dst: &mut [f32]) -> Result<()> {
    use half::slice::HalfFloatSliceExt;
    if src.len() != dst.len() {
        return Err(Error::length("f32 destination", src.len(), dst.len()));
    }
    src.convert_to_f32_slice(dst);
    Ok(())
}

/// f32 -> f16, rounding to nearest even.
pub fn f32_to_f16(src: &[f32], dst: &mut [f16]) -> Result<()> {
    use half::slice::HalfFloatSliceExt;
    if src.len() != dst.len() {
        return Err(Error::length("f16 destination", src.len(), dst.len()));
    }
    dst.convert_from_f32_slice(src);
    Ok(())
}

#[cfg(test)]
mod tests;
