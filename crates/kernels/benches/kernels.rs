//! Criterion benches: dot products per ISA next to the scalar reference,
//! Q4_1 matmul at the default model's shapes, and the integer matmul of
//! every type per ISA (scalar reference included) and on the load-time
//! panels next to the f32 path,
//! attention over an f16 cache, the training GEMM (f32 and Q4_1 B, per ISA
//! and beside its reference), and the SIMD row ops (exp, softmax, SiLU,
//! RMS norm) next to their references, and the Q4_0 cache quantizers
//! (llama.cpp's plain rounding and cria's scale search), and the Q8_0 row
//! quantizer (`convert --outtype q8_0`) per ISA. Throughput is in FLOPs (criterion
//! prints it as "elem/s": read Gelem/s as GFLOPS), elements for the row ops.
//!
//!     cargo bench -p cria-kernels --bench kernels

use cria_kernels::{
    attend_f16, attend_scalar, dot_f16, dot_f16_scalar, dot_scalar, exp_inplace, gemm_reference,
    gemm_with, matmul, matmul_f32_with, matmul_packed, matmul_with, quantize_q4_0,
    quantize_q4_0_lsq, quantize_q4_0_lsq_scalar, quantize_row_on, rmsnorm, rmsnorm_scalar,
    silu_mul, silu_mul_scalar, softmax, softmax_scalar, Cpu, GgmlType, KvHead, MatRef,
    PackedMatrix, QMatrix, Rhs, ThreadPool,
};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::{Rng, SeedableRng};

fn bench_dot(c: &mut Criterion) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut g = c.benchmark_group("dot");
    for len in [64usize, 1536, 4096] {
        let a: Vec<f32> = (0..len).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let b: Vec<f32> = (0..len).map(|_| rng.gen_range(-1.0..1.0)).collect();
        g.throughput(Throughput::Elements(2 * len as u64));
        g.bench_with_input(BenchmarkId::new("reference", len), &len, |bch, _| {
            bch.iter(|| dot_scalar(black_box(&a), black_box(&b)))
        });
        for cpu in Cpu::all_available() {
            let name = format!("{:?}", cpu.isa());
            g.bench_with_input(BenchmarkId::new(name, len), &len, |bch, _| {
                bch.iter(|| cpu.dot(black_box(&a), black_box(&b)))
            });
        }
    }
    g.finish();
}

/// A random Q4_1 matrix with small finite scales.
fn q4_1_matrix(rng: &mut impl Rng, rows: usize, cols: usize) -> Vec<u8> {
    let mut bytes: Vec<u8> = (0..rows * cols / 32 * 20).map(|_| rng.gen()).collect();
    for block in bytes.chunks_exact_mut(20) {
        block[0..2].copy_from_slice(&half::f16::from_f32(rng.gen_range(0.0..0.02)).to_le_bytes());
        block[2..4].copy_from_slice(&half::f16::from_f32(rng.gen_range(-0.1..0.0)).to_le_bytes());
    }
    bytes
}

fn bench_matmul(c: &mut Criterion) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let mut g = c.benchmark_group("matmul_q4_1");
    g.sample_size(10);
    // SmolLM2-135M: ffn_up/gate are 1536 x 576, ffn_down 576 x 1536.
    for (rows, cols) in [(576usize, 1536usize), (1536, 576)] {
        let bytes = q4_1_matrix(&mut rng, rows, cols);
        let w = QMatrix::new(GgmlType::Q4_1, rows, cols, &bytes).unwrap();
        for n in [1usize, 512] {
            let x: Vec<f32> = (0..n * cols).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let mut out = vec![0f32; n * rows];
            g.throughput(Throughput::Elements((2 * rows * cols * n) as u64));
            for threads in [1usize, 2] {
                let pool = ThreadPool::new(threads);
                let id = BenchmarkId::new(format!("{rows}x{cols}/n{n}"), format!("t{threads}"));
                g.bench_function(id, |bch| {
                    bch.iter(|| matmul(&w, black_box(&x), &mut out, &pool).unwrap())
                });
            }
        }
    }
    g.finish();
}

/// Random blocks of `ty` with small finite f16 scales at `offsets`.
fn random_blocks(rng: &mut impl Rng, ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    use GgmlType::*;
    let offsets: &[usize] = match ty {
        Q4_0 | Q5_0 | Q8_0 | IQ4_NL | IQ4_XS => &[0],
        Q6_K => &[208],
        _ => &[0, 2],
    };
    let bb = ty.block_bytes() as usize;
    let mut b: Vec<u8> = (0..rows * cols / ty.block_size() as usize * bb)
        .map(|_| rng.gen())
        .collect();
    for block in b.chunks_exact_mut(bb) {
        for &o in offsets {
            let d = half::f16::from_f32(rng.gen_range(-0.02..0.02));
            block[o..o + 2].copy_from_slice(&d.to_le_bytes());
        }
    }
    b
}

/// One thread, 1536 x 512 (1536 x 768 for K-quants: whole super-blocks),
/// mat-vec (n = 1) and a 64-row batch: integer kernels per ISA vs f32.
fn bench_qdot(c: &mut Criterion) {
    use GgmlType::*;
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut g = c.benchmark_group("qmatmul");
    g.sample_size(10);
    let pool = ThreadPool::new(1);
    for ty in [
        Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, Q4_K, Q5_K, Q6_K, IQ4_XS,
    ] {
        let (rows, cols) = if ty.block_size() == 256 {
            (1536, 768)
        } else {
            (1536, 512)
        };
        let bytes = random_blocks(&mut rng, ty, rows, cols);
        let w = QMatrix::new(ty, rows, cols, &bytes).unwrap();
        for n in [1usize, 64] {
            let x: Vec<f32> = (0..n * cols).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let mut out = vec![0f32; n * rows];
            g.throughput(Throughput::Elements((2 * rows * cols * n) as u64));
            for cpu in Cpu::all_available() {
                if n > 1 && cpu.isa() == cria_kernels::Isa::Scalar {
                    continue;
                }
                let id = BenchmarkId::new(format!("{ty}/n{n}"), format!("{:?}", cpu.isa()));
                g.bench_function(id, |bch| {
                    bch.iter(|| matmul_with(cpu, &w, black_box(&x), &mut out, &pool).unwrap())
                });
            }
            // The load-time panels (AVX-512 VNNI machines).
            if let Some(p) = PackedMatrix::pack(&w) {
                let id = BenchmarkId::new(format!("{ty}/n{n}"), "packed");
                g.bench_function(id, |bch| {
                    bch.iter(|| matmul_packed(&p, black_box(&x), &mut out, &pool).unwrap())
                });
            }
            let id = BenchmarkId::new(format!("{ty}/n{n}"), "f32-path");
            g.bench_function(id, |bch| {
                bch.iter(|| {
                    matmul_f32_with(Cpu::get(), &w, black_box(&x), &mut out, &pool).unwrap()
                })
            });
        }
    }
    g.finish();
}

fn bench_f16(c: &mut Criterion) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let mut g = c.benchmark_group("dot_f16");
    let len = 64;
    let a: Vec<f32> = (0..len).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let b: Vec<half::f16> = (0..len)
        .map(|_| half::f16::from_f32(rng.gen_range(-1.0..1.0)))
        .collect();
    g.throughput(Throughput::Elements(2 * len as u64));
    g.bench_function("reference", |bch| {
        bch.iter(|| dot_f16_scalar(black_box(&a), black_box(&b)))
    });
    g.bench_function("simd", |bch| {
        bch.iter(|| dot_f16(black_box(&a), black_box(&b)))
    });
    g.finish();
}

/// One KV head of a 512-token prompt's attention at SmolLM2-135M's shape
/// (head_dim 64, 3 query heads per KV head, 3 KV heads in the cache):
/// every query once, in groups of 4 rows x 3 heads as the model runs them,
/// then one row at a time, then the scalar reference (every 16th query
/// only: it is that much slower).
fn bench_attend(c: &mut Criterion) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut g = c.benchmark_group("attend_f16");
    g.sample_size(10);
    let (d, n, heads, kv_dim) = (64usize, 512usize, 3usize, 192usize);
    let mut f16s = |len: usize| -> Vec<half::f16> {
        (0..len)
            .map(|_| half::f16::from_f32(rng.gen_range(-1.0..1.0)))
            .collect()
    };
    let (k, v) = (f16s(n * kv_dim), f16s(n * kv_dim));
    let kv = KvHead {
        k: &k,
        k_block: 16 * kv_dim,
        v: &v,
        v_row: kv_dim,
    };
    let q: Vec<f32> = (0..n * heads * d)
        .map(|i| (i % 7) as f32 * 0.1 - 0.3)
        .collect();
    // 2 flops per (query, key, dim) for q.k and again for p.v.
    g.throughput(Throughput::Elements(
        (4 * d * heads * n * (n + 1) / 2) as u64,
    ));
    let last: Vec<usize> = (0..n).flat_map(|p| [p; 3]).collect();
    let mut sc = Vec::new();
    for rows in [4usize, 1] {
        let mut out = vec![0f32; rows * heads * d];
        g.bench_function(format!("{rows} rows x {heads} heads"), |bch| {
            bch.iter(|| {
                for r0 in (0..n).step_by(rows) {
                    let (a, b) = (r0 * heads, (r0 + rows) * heads);
                    attend_f16(&q[a * d..b * d], &last[a..b], kv, 0.125, &mut sc, &mut out);
                }
                black_box(&out);
            })
        });
    }
    let mut out = vec![0f32; d];
    g.bench_function("reference, 1 query", |bch| {
        bch.iter(|| {
            for p in (0..n).step_by(16) {
                let q = &q[3 * p * d..(3 * p + 1) * d];
                attend_scalar(q, &last[3 * p..3 * p + 1], kv, 0.125, &mut sc, &mut out);
            }
            black_box(&out);
        })
    });
    g.finish();
}

/// The row ops of the forward pass at SmolLM2-135M's shapes (a 1536-wide
/// FFN row, 576-wide norm, 512 attention scores), next to their scalar
/// references. Throughput in elements.
fn bench_rowops(c: &mut Criterion) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    let mut g = c.benchmark_group("rowops");
    let x: Vec<f32> = (0..1536).map(|_| rng.gen_range(-8.0..8.0)).collect();
    let u: Vec<f32> = (0..1536).map(|_| rng.gen_range(-2.0..2.0)).collect();
    g.throughput(Throughput::Elements(1536));
    let mut y = x.clone();
    g.bench_function("silu_mul/reference", |b| {
        b.iter(|| {
            y.copy_from_slice(&x);
            silu_mul_scalar(black_box(&mut y), &u)
        })
    });
    g.bench_function("silu_mul/simd", |b| {
        b.iter(|| {
            y.copy_from_slice(&x);
            silu_mul(black_box(&mut y), &u)
        })
    });
    g.bench_function("exp/std", |b| {
        b.iter(|| {
            y.copy_from_slice(&x);
            y.iter_mut().for_each(|v| *v = v.exp());
            black_box(&y);
        })
    });
    g.bench_function("exp/simd", |b| {
        b.iter(|| {
            y.copy_from_slice(&x);
            exp_inplace(black_box(&mut y))
        })
    });
    g.throughput(Throughput::Elements(512));
    let mut s = x[..512].to_vec();
    g.bench_function("softmax/reference", |b| {
        b.iter(|| {
            s.copy_from_slice(&x[..512]);
            softmax_scalar(black_box(&mut s))
        })
    });
    g.bench_function("softmax/simd", |b| {
        b.iter(|| {
            s.copy_from_slice(&x[..512]);
            softmax(black_box(&mut s))
        })
    });
    g.throughput(Throughput::Elements(576));
    let mut out = vec![0f32; 576];
    g.bench_function("rmsnorm/reference", |b| {
        b.iter(|| rmsnorm_scalar(&mut out, black_box(&x[..576]), &u[..576], 1e-5))
    });
    g.bench_function("rmsnorm/simd", |b| {
        b.iter(|| rmsnorm(&mut out, black_box(&x[..576]), &u[..576], 1e-5))
    });
    g.finish();
}

/// The backward product `dX (256 x cols) = dY (256 x rows) * W`, W a
/// Q4_1 matrix as stored (the f32 reference on the small shape only).
fn bench_gemm(c: &mut Criterion) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut g = c.benchmark_group("gemm");
    g.sample_size(10);
    for (rows, cols) in [(576usize, 1536usize), (1536, 576)] {
        let bytes = q4_1_matrix(&mut rng, rows, cols);
        let w = QMatrix::new(GgmlType::Q4_1, rows, cols, &bytes).unwrap();
        let m = 256;
        let a: Vec<f32> = (0..m * rows).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let av = MatRef::row_major(&a, m, rows).unwrap();
        let mut out = vec![0f32; m * cols];
        g.throughput(Throughput::Elements((2 * m * rows * cols) as u64));
        let shape = format!("{m}x{rows}x{cols}");
        if rows == 576 {
            g.bench_function(BenchmarkId::new("reference", &shape), |bch| {
                bch.iter(|| gemm_reference(av, Rhs::Quant(w), &mut out, cols, false).unwrap())
            });
        }
        for threads in [1, 2] {
            let pool = ThreadPool::new(threads);
            for cpu in Cpu::all_available() {
                if cpu.isa() == cria_kernels::Isa::Scalar {
                    continue;
                }
                let name = format!("{:?}-t{threads}", cpu.isa());
                g.bench_function(BenchmarkId::new(name, &shape), |bch| {
                    bch.iter(|| {
                        gemm_with(cpu, av, Rhs::Quant(w), &mut out, cols, false, &pool).unwrap()
                    })
                });
            }
        }
    }
    g.finish();
}

/// One token's K and V rows of the default model through the Q4_0 cache
/// quantizers: 30 layers x 2 x 192 values = 360 blocks of 32 (the values
/// are random normals, Hadamard-rotated rows being close to that).
/// Throughput in elements.
fn bench_kv_quant(c: &mut Criterion) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let x: Vec<f32> = (0..360 * 32)
        .map(|_| (0..12).map(|_| rng.gen::<f32>()).sum::<f32>() - 6.0)
        .collect();
    let mut g = c.benchmark_group("kv_quant_q4_0");
    g.throughput(Throughput::Elements(x.len() as u64));
    let mut q = [0u8; 32];
    g.bench_function("plain (llama.cpp)", |b| {
        b.iter(|| {
            for xb in x.chunks_exact(32) {
                black_box(quantize_q4_0(xb, &mut q));
            }
        })
    });
    g.bench_function("scale search", |b| {
        b.iter(|| {
            for xb in x.chunks_exact(32) {
                black_box(quantize_q4_0_lsq(xb, &mut q));
            }
        })
    });
    g.bench_function("scale search, reference", |b| {
        b.iter(|| {
            for xb in x.chunks_exact(32) {
                let xb: &[f32; 32] = xb.try_into().unwrap();
                black_box(quantize_q4_0_lsq_scalar(xb, &mut q));
            }
        })
    });
    g.finish();
}

/// The Q8_0 row quantizer at a 7B row (4096) per ISA, `Scalar` being the
/// reference; bf16-rounded inputs as `convert` feeds it. Throughput in
/// elements.
fn bench_q8_0(c: &mut Criterion) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    let x: Vec<f32> = (0..4096)
        .map(|_| half::bf16::from_f32(rng.gen_range(-0.05f32..0.05)).to_f32())
        .collect();
    let mut q = vec![0u8; 4096 / 32 * 34];
    let mut g = c.benchmark_group("quantize_q8_0");
    g.throughput(Throughput::Elements(x.len() as u64));
    for cpu in Cpu::all_available() {
        g.bench_function(format!("{:?}", cpu.isa()), |b| {
            b.iter(|| quantize_row_on(cpu, GgmlType::Q8_0, black_box(&x), None, &mut q).unwrap())
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    bench_q8_0,
    bench_kv_quant,
    bench_gemm,
    bench_dot,
    bench_matmul,
    bench_qdot,
    bench_f16,
    bench_attend,
    bench_rowops
);
criterion_main!(benches);
