//! Criterion benches: dot products per ISA next to the scalar reference, and
//! Q4_1 matmul at the default model's shapes. Throughput is in FLOPs
//! (criterion prints it as "elem/s": read Gelem/s as GFLOPS).
//!
//!     cargo bench -p cria-kernels --bench kernels

use cria_kernels::{dot_scalar, matmul, Cpu, GgmlType, QMatrix, ThreadPool};
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

criterion_group!(benches, bench_dot, bench_matmul);
criterion_main!(benches);
