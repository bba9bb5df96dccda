//! How fast the packed Q4_1 kernels consume weights that stream from
//! memory, against the same work on weights that sit in cache: sets of
//! 1536 x 576 matrices (the default model's FFN shape) from 1 to 128 MiB,
//! multiplied by 1, 2, 4, 8 and 64 activation rows, in GB/s of weights and
//! GMAC/s. `cargo run --release -p cria-kernels --example stream_probe --
//! THREADS`. A measurement tool, not a test: run it on a quiet machine (or
//! under `chrt -f 50`).
use cria_gguf::GgmlType;
use cria_kernels::{matmul_packed, PackedMatrix, QMatrix, ThreadPool};
use std::time::Instant;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let threads: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1);
    let pool = ThreadPool::new(threads);
    let (rows, cols) = (1536usize, 576usize);
    let nb = cols / 32;
    let bytes_per = rows * nb * 20;
    let mut seed = 1u64;
    for &mb in &[1usize, 4, 16, 64, 128] {
        let nmat = (mb << 20).div_ceil(bytes_per).max(1);
        let mats: Vec<PackedMatrix> = (0..nmat)
            .map(|_| {
                let mut d = vec![0u8; bytes_per];
                for blk in d.chunks_mut(20) {
                    blk[0..2].copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
                    blk[2..4].copy_from_slice(&half::f16::from_f32(-0.05).to_le_bytes());
                    for b in &mut blk[4..] {
                        seed = seed
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        *b = (seed >> 33) as u8;
                    }
                }
                let q = QMatrix::new(GgmlType::Q4_1, rows, cols, &d).unwrap();
                PackedMatrix::pack(&q).unwrap()
            })
            .collect();
        for &n in &[1usize, 2, 4, 8, 64] {
            let x: Vec<f32> = (0..n * cols)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.01)
                .collect();
            let mut out = vec![0f32; n * rows];
            let reps = ((256usize << 20) / (nmat * bytes_per) / n.max(1)).max(1);
            for m in &mats {
                matmul_packed(m, &x, &mut out, &pool).unwrap();
            }
            let t = Instant::now();
            for _ in 0..reps {
                for m in &mats {
                    matmul_packed(m, &x, &mut out, &pool).unwrap();
                }
            }
            let s = t.elapsed().as_secs_f64();
            let bytes = (reps * nmat * bytes_per) as f64;
            let macs = bytes / 20.0 * 32.0 * n as f64;
            println!(
                "set {mb:>4} MiB n {n:>3}: {:6.2} GB/s of weights, {:6.1} GMAC/s",
                bytes / s / 1e9,
                macs / s / 1e9
            );
        }
    }
}
