//! f32 dot products with one runtime dispatch point, [`Cpu`].
//!
//! Every kernel computes each output element with the same instruction
//! sequence: one vector accumulator of the ISA's width fed by fused
//! multiply-adds over the whole vectors, a fixed-order horizontal sum, then
//! the tail (`len % width` elements) added one by one in order. So
//! [`Cpu::dot`] of two vectors is bit-identical to the matching element of a
//! multi-row tile ([`Cpu::dot_tile`]) and of [`crate::matmul`], however rows
//! are grouped or split across threads. Results differ between ISAs (the
//! sums are ordered differently) but stay within float rounding of
//! [`dot_scalar`], the reference.

#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::sync::OnceLock;

/// An instruction set a kernel can run on.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Portable Rust, no SIMD: the reference.
    Scalar,
    /// x86-64 AVX2 + FMA, 8 lanes.
    Avx2,
    /// x86-64 AVX-512F, 16 lanes.
    Avx512,
    /// aarch64 NEON, 4 lanes.
    Neon,
}

/// The CPU features the kernels use, detected once per process.
///
/// A `Cpu` only ever names an [`Isa`] the running machine supports, which is
/// what makes its methods safe to call.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Cpu {
    isa: Isa,
}

impl Cpu {
    /// The best ISA of this machine (detected on the first call).
    pub fn get() -> Cpu {
        static CPU: OnceLock<Cpu> = OnceLock::new();
        *CPU.get_or_init(Cpu::detect)
    }

    fn detect() -> Cpu {
        for isa in [Isa::Avx512, Isa::Avx2, Isa::Neon] {
            if let Some(cpu) = Cpu::with_isa(isa) {
                return cpu;
            }
        }
        Cpu { isa: Isa::Scalar }
    }

    /// A `Cpu` using `isa`, or `None` if this machine lacks it. Tests use
    /// this to run every path the machine has.
    pub fn with_isa(isa: Isa) -> Option<Cpu> {
        let ok = match isa {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => std::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        };
        ok.then_some(Cpu { isa })
    }

    /// Every ISA this machine supports, best last.
    pub fn all_available() -> Vec<Cpu> {
        [Isa::Scalar, Isa::Neon, Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter_map(Cpu::with_isa)
            .collect()
    }

    pub fn isa(self) -> Isa {
        self.isa
    }

    /// Sum of `a[i] * b[i]`. Panics if the lengths differ (a caller bug,
    /// never data-dependent).
    pub fn dot(self, a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len(), "dot of vectors of different lengths");
        let mut out = [[0f32; 1]; 1];
        self.dot_tile::<1, 1>(a, b, a.len(), &mut out);
        out[0][0]
    }

    /// `out[r][j] = dot(w row r, x row j)` for `R` rows of `w` and `N` rows of
    /// `x`, each row `len` long and stored back to back. Each element is
    /// bit-identical to [`Cpu::dot`] of the same two rows.
    pub fn dot_tile<const R: usize, const N: usize>(
        self,
        w: &[f32],
        x: &[f32],
        len: usize,
        out: &mut [[f32; N]; R],
    ) {
        assert!(
            w.len() >= R * len && x.len() >= N * len,
            "tile out of bounds"
        );
        match self.isa {
            // SAFETY: a Cpu names only an ISA detected on this machine, and
            // the slices hold R and N rows of `len` (checked above).
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { x86::tile_avx512::<R, N>(w, x, len, out) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { x86::tile_avx2::<R, N>(w, x, len, out) },
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => unsafe { neon::tile_neon::<R, N>(w, x, len, out) },
            _ => tile_scalar::<R, N>(w, x, len, out),
        }
    }

    /// The tile shape (weight rows, activation rows) that keeps this ISA's
    /// accumulators in registers.
    pub fn tile_shape(self) -> (usize, usize) {
        match self.isa {
            Isa::Avx512 | Isa::Neon => (4, 4),
            Isa::Avx2 => (4, 2),
            Isa::Scalar => (1, 1),
        }
    }
}

/// Dequantize a row: whole blocks in, the matching elements out.
pub(crate) type RowFn = fn(&[u8], &mut [f32]);

/// A whole-row SIMD dequantizer for `ty` on `cpu`, if there is one; its
/// output is bit-identical to the scalar [`crate::dequantize_row`]. The
/// caller passes whole blocks and the matching number of elements.
pub(crate) fn row_dequantizer(cpu: Cpu, ty: cria_gguf::GgmlType) -> Option<RowFn> {
    #[cfg(target_arch = "x86_64")]
    {
        use cria_gguf::GgmlType::*;
        // SAFETY (each wrapper): only handed out for a Cpu whose ISA was
        // detected on this machine.
        let f: RowFn = match (cpu.isa, ty) {
            (Isa::Avx512, Q4_0) => |s, d| unsafe { x86::dequant_q4_0_avx512(s, d) },
            (Isa::Avx512, Q4_1) => |s, d| unsafe { x86::dequant_q4_1_avx512(s, d) },
            (Isa::Avx512, Q8_0) => |s, d| unsafe { x86::dequant_q8_0_avx512(s, d) },
            (Isa::Avx2, Q4_0) => |s, d| unsafe { x86::dequant_q4_0_avx2(s, d) },
            (Isa::Avx2, Q4_1) => |s, d| unsafe { x86::dequant_q4_1_avx2(s, d) },
            (Isa::Avx2, Q8_0) => |s, d| unsafe { x86::dequant_q8_0_avx2(s, d) },
            (Isa::Avx512, BF16) => |s, d| unsafe { x86::dequant_bf16_avx512(s, d) },
            (Isa::Avx2, BF16) => |s, d| unsafe { x86::dequant_bf16_avx2(s, d) },
            (Isa::Avx512, F16) if f16c() => |s, d| unsafe { x86::dequant_f16_avx512(s, d) },
            (Isa::Avx2, F16) if f16c() => |s, d| unsafe { x86::dequant_f16_avx2(s, d) },
            _ => return None,
        };
        Some(f)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (cpu, ty);
        None
    }
}

/// The elements after the SIMD kernels' last full vector, as the scalar
/// BF16 dequantizer converts them.
#[cfg(target_arch = "x86_64")]
fn bf16_tail(src: &[u8], dst: &mut [f32]) {
    for (c, y) in src.chunks_exact(2).zip(dst) {
        *y = half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
    }
}

/// The elements of an F16 row past the last full vector.
#[cfg(target_arch = "x86_64")]
fn f16_tail(src: &[u8], dst: &mut [f32]) {
    for (c, y) in src.chunks_exact(2).zip(dst) {
        *y = half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
    }
}

/// Whether the CPU has F16C (the F16 row dequantizers' conversion).
#[cfg(target_arch = "x86_64")]
fn f16c() -> bool {
    std::is_x86_feature_detected!("f16c")
}

/// Dot product on the best ISA of this machine.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    Cpu::get().dot(a, b)
}

/// Reference dot product: a plain left-to-right sum.
pub fn dot_scalar(a: &[f32], b: &[f32]) -> f32 {
    let mut s = 0f32;
    for (x, y) in a.iter().zip(b) {
        s += x * y;
    }
    s
}

/// The scalar tile: each element is [`dot_scalar`].
fn tile_scalar<const R: usize, const N: usize>(
    w: &[f32],
    x: &[f32],
    len: usize,
    out: &mut [[f32; N]; R],
) {
    for (r, o) in out.iter_mut().enumerate() {
        for (j, o) in o.iter_mut().enumerate() {
            *o = dot_scalar(&w[r * len..(r + 1) * len], &x[j * len..(j + 1) * len]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    const LENS: [usize; 14] = [0, 1, 3, 7, 8, 15, 16, 17, 31, 33, 64, 100, 1000, 4099];

    fn random(rng: &mut impl Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
    }

    /// Error bound of a reordered f32 sum: a few ulps of the sum of |terms|
    /// per element of the longest chain.
    fn close(got: f32, a: &[f32], b: &[f32]) -> bool {
        let exact: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
        let mag: f64 = a
            .iter()
            .zip(b)
            .map(|(x, y)| (*x as f64 * *y as f64).abs())
            .sum();
        let tol = 2.0 * (a.len() as f64 + 2.0) * f32::EPSILON as f64 * mag + 1e-30;
        (got as f64 - exact).abs() <= tol
    }

    #[test]
    fn every_isa_matches_reference_on_awkward_lengths() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for cpu in Cpu::all_available() {
            for len in LENS {
                let a = random(&mut rng, len);
                let b = random(&mut rng, len);
                let got = cpu.dot(&a, &b);
                assert!(close(got, &a, &b), "{:?} len {len}: {got}", cpu.isa());
                assert!(close(dot_scalar(&a, &b), &a, &b));
            }
        }
    }

    #[test]
    fn tiles_are_bit_identical_to_dot() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        for cpu in Cpu::all_available() {
            for len in LENS {
                let w = random(&mut rng, 4 * len);
                let x = random(&mut rng, 4 * len);
                let mut t44 = [[0f32; 4]; 4];
                let mut t42 = [[0f32; 2]; 4];
                let mut t14 = [[0f32; 4]; 1];
                cpu.dot_tile(&w, &x, len, &mut t44);
                cpu.dot_tile(&w, &x, len, &mut t42);
                cpu.dot_tile(&w, &x, len, &mut t14);
                for r in 0..4 {
                    for j in 0..4 {
                        let d = cpu.dot(&w[r * len..][..len], &x[j * len..][..len]);
                        assert_eq!(t44[r][j].to_bits(), d.to_bits(), "{:?} {len}", cpu.isa());
                        if j < 2 {
                            assert_eq!(t42[r][j].to_bits(), d.to_bits());
                        }
                        if r == 0 {
                            assert_eq!(t14[r][j].to_bits(), d.to_bits());
                        }
                    }
                }
            }
        }
    }

    /// The BF16 and F16 row dequantizers give the scalar one's bits for
    /// every 16-bit pattern (NaNs, subnormals, both zeros), on lengths that
    /// leave every tail size.
    #[test]
    fn bf16_rows_match_scalar_for_every_pattern() {
        let src: Vec<u8> = (0..=u16::MAX).flat_map(|b| b.to_le_bytes()).collect();
        for (cpu, ty) in Cpu::all_available().into_iter().flat_map(|c| {
            [
                (c, cria_gguf::GgmlType::BF16),
                (c, cria_gguf::GgmlType::F16),
            ]
        }) {
            for n in [65536usize, 65535, 65521, 17, 16, 15, 9, 8, 7, 1, 0] {
                let (s, mut want) = (&src[2 * (65536 - n)..], vec![0f32; n]);
                crate::dequantize_row(ty, s, &mut want).unwrap();
                let mut got = vec![f32::NAN; n];
                cpu.dequantize_row(ty, s, &mut got).unwrap();
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(
                        g.to_bits(),
                        w.to_bits(),
                        "{:?} {ty:?} n {n} element {i}",
                        cpu.isa()
                    );
                }
            }
        }
    }

    #[test]
    fn detected_isa_is_the_best_available() {
        let best = Cpu::all_available().pop().unwrap();
        assert_eq!(Cpu::get(), best);
    }
}
