//! Decode attention as a batched step runs it: `S` sequences, each with
//! its own f16 KV cache laid out as the model's `KvCache` lays it out
//! (keys in tiles of 16 positions x kv_dim, dimension-major inside each
//! head's block; values as rows of all KV heads), every layer, every KV
//! head attended by its group of query heads. Between layers it streams
//! through a buffer standing for that layer's weights, so the caches are
//! evicted from L2 as in a real step.
//!
//! ```text
//! cargo run --release -p cria-kernels --example attn_decode -- \
//!     [--seqs 8] [--layers 30] [--kv-heads 3] [--group 3] [--head-dim 64] \
//!     [--ctx 64,128,192,256,320] [--weights-mib 92] [--threads 1] [--steps 20] \
//!     [--cache f16|q8_0|q4_0] [--huge 0|1]
//! ```
//!
//! Prints, per context length, the time of the attention of one step
//! (all sequences, layers and heads; the weight streaming is not counted),
//! the cache bytes read per step and the bandwidth that makes. The
//! timing is over `--steps` steps after one warm-up; the median step and
//! the best. `--huge 1` puts the caches on 2 MiB pages (the model's
//! `KvCache` is a plain `Vec` today).

use cria_kernels::{attend, AttScratch, Keys, QKeys, QType, QValues, Values, QBLOCK};
use half::f16;
use rand::{Rng, SeedableRng};
use std::time::Instant;

struct Args {
    seqs: usize,
    layers: usize,
    kv_heads: usize,
    group: usize,
    head_dim: usize,
    ctx: Vec<usize>,
    weights_mib: usize,
    threads: usize,
    steps: usize,
    cache: String,
    huge: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        seqs: 8,
        layers: 30,
        kv_heads: 3,
        group: 3,
        head_dim: 64,
        ctx: vec![64, 128, 192, 256, 320],
        weights_mib: 92,
        threads: 1,
        steps: 20,
        cache: "f16".into(),
        huge: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let val = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = || {
            val.parse::<usize>()
                .map_err(|e| format!("{flag} {val}: {e} (want a whole number)"))
        };
        match flag.as_str() {
            "--seqs" => a.seqs = num()?,
            "--layers" => a.layers = num()?,
            "--kv-heads" => a.kv_heads = num()?,
            "--group" => a.group = num()?,
            "--head-dim" => a.head_dim = num()?,
            "--weights-mib" => a.weights_mib = num()?,
            "--threads" => a.threads = num()?.max(1),
            "--steps" => a.steps = num()?.max(1),
            "--cache" => a.cache = val.clone(),
            "--huge" => a.huge = num()? != 0,
            "--ctx" => {
                a.ctx = val
                    .split(',')
                    .map(|s| s.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("--ctx {val}: {e} (want e.g. 64,128)"))?
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if a.ctx.contains(&0) {
        return Err("--ctx: every context length must be at least 1".into());
    }
    if !a.head_dim.is_multiple_of(16) {
        return Err(format!("--head-dim {}: want a multiple of 16", a.head_dim));
    }
    Ok(a)
}

/// One sequence's cache, every layer, in `KvCache`'s layout.
enum Cache {
    F16 { k: Mem, v: Mem },
    Q { ty: QType, k: Mem, v: Mem },
}

/// Cache memory: a `Vec` (4 KiB pages, as `KvCache` allocates today) or,
/// with `--huge 1`, anonymous memory advised to use 2 MiB pages.
enum Mem {
    Vec(Vec<u64>, usize),
    Map(memmap2::MmapMut),
}

impl Mem {
    fn new(bytes: usize, huge: bool, rng: &mut impl Rng) -> Mem {
        let mut m = if huge {
            let map = memmap2::MmapMut::map_anon(bytes.max(1)).expect("anonymous map");
            if let Err(e) = map.advise(memmap2::Advice::HugePage) {
                eprintln!("attn_decode: madvise(MADV_HUGEPAGE) failed: {e}");
            }
            Mem::Map(map)
        } else {
            Mem::Vec(vec![0; bytes.div_ceil(8)], bytes)
        };
        rng.fill(m.bytes_mut());
        m
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            // SAFETY: `len <= 8 v.len()` bytes of initialised u64s.
            Mem::Vec(v, len) => unsafe {
                std::slice::from_raw_parts_mut(v.as_mut_ptr().cast(), *len)
            },
            Mem::Map(m) => m,
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            // SAFETY: as in `bytes_mut`.
            Mem::Vec(v, len) => unsafe { std::slice::from_raw_parts(v.as_ptr().cast(), *len) },
            Mem::Map(m) => m,
        }
    }

    fn f16(&self) -> &[f16] {
        let b = self.bytes();
        // SAFETY: 8-byte or page aligned; every bit pattern is an f16.
        unsafe { std::slice::from_raw_parts(b.as_ptr().cast(), b.len() / 2) }
    }
}

/// Random f16 values in [-1, 1) over `m`.
fn fill_f16(m: &mut Mem, rng: &mut impl Rng) {
    for c in m.bytes_mut().chunks_exact_mut(2) {
        c.copy_from_slice(&f16::from_f32(rng.gen_range(-1.0..1.0)).to_le_bytes());
    }
}

fn main() {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("attn_decode: {e}");
            std::process::exit(2);
        }
    };
    let qty = match a.cache.as_str() {
        "f16" => None,
        "q8_0" => Some(QType::Q8_0),
        "q4_0" => Some(QType::Q4_0),
        other => {
            eprintln!("attn_decode: --cache {other}: want f16, q8_0 or q4_0");
            std::process::exit(2);
        }
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(19);
    let (hd, kvd) = (a.head_dim, a.kv_heads * a.head_dim);
    let n_ctx = *a.ctx.iter().max().unwrap_or(&1);
    let tiles = n_ctx.div_ceil(16);
    let caches: Vec<Cache> = (0..a.seqs)
        .map(|_| match qty {
            None => {
                let mut k = Mem::new(2 * a.layers * tiles * 16 * kvd, a.huge, &mut rng);
                let mut v = Mem::new(2 * a.layers * n_ctx * kvd, a.huge, &mut rng);
                fill_f16(&mut k, &mut rng);
                fill_f16(&mut v, &mut rng);
                Cache::F16 { k, v }
            }
            Some(ty) => {
                let nb = kvd / QBLOCK;
                let k = Mem::new(
                    a.layers * nb * tiles * ty.key_tile_bytes(),
                    a.huge,
                    &mut rng,
                );
                let v = Mem::new(a.layers * nb * n_ctx * ty.block_bytes(), a.huge, &mut rng);
                let mut c = Cache::Q { ty, k, v };
                // Scales as f16 in a sane range, not random bit patterns.
                sanitize(&mut c, a.layers * nb, tiles, n_ctx);
                c
            }
        })
        .collect();
    let weights: Vec<u64> = vec![1; a.weights_mib * (1 << 20) / 8];
    let q: Vec<f32> = (0..a.group * hd)
        .map(|_| rng.gen_range(-1.0..1.0))
        .collect();
    let scale = 1.0 / (hd as f32).sqrt();
    println!(
        "# {} seqs x {} layers x {} KV heads x {} queries, head_dim {hd}, {} cache, \
         {} MiB weights streamed per step, {} threads, {} pages",
        a.seqs,
        a.layers,
        a.kv_heads,
        a.group,
        a.cache,
        a.weights_mib,
        a.threads,
        if a.huge { "2 MiB (advised)" } else { "4 KiB" }
    );
    println!("| ctx | step attention, median ms | best ms | cache MB/step | GB/s (median) | us per KV head |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for &ctx in &a.ctx {
        let last = vec![ctx - 1; a.group];
        let mut times = Vec::new();
        for step in 0..=a.steps {
            let spent = run_step(&a, &caches, &weights, &q, &last, scale, n_ctx);
            if step > 0 {
                times.push(spent);
            }
        }
        times.sort_by(f64::total_cmp);
        let med = times[times.len() / 2];
        let bytes = match qty {
            None => a.seqs * a.layers * ctx * kvd * 4,
            Some(ty) => a.seqs * a.layers * ctx * (kvd / QBLOCK) * 2 * ty.block_bytes(),
        } as f64;
        let calls = (a.seqs * a.layers * a.kv_heads) as f64;
        println!(
            "| {ctx} | {:.3} | {:.3} | {:.1} | {:.1} | {:.2} |",
            med * 1e3,
            times[0] * 1e3,
            bytes / 1e6,
            bytes / med / 1e9,
            med * 1e6 * a.threads as f64 / calls
        );
    }
}

/// Gives every block's f16 scale a value in [0.001, 0.01].
fn sanitize(c: &mut Cache, nblocks: usize, tiles: usize, n_ctx: usize) {
    let Cache::Q { ty, k, v } = c else { return };
    let (tb, bb) = (ty.key_tile_bytes(), ty.block_bytes());
    let (k, v) = (k.bytes_mut(), v.bytes_mut());
    let d = f16::from_f32(0.005).to_bits().to_le_bytes();
    // A key tile starts with its 16 positions' scales.
    for t in 0..nblocks * tiles {
        for p in 0..16 {
            k[t * tb + 2 * p..t * tb + 2 * p + 2].copy_from_slice(&d);
        }
    }
    for r in 0..nblocks * n_ctx {
        v[r * bb..r * bb + 2].copy_from_slice(&d);
    }
}

/// One step: for each layer, the weights streamed, then every sequence's
/// KV heads attended (sequences split across threads). Returns the
/// seconds spent in attention, the slowest thread's.
fn run_step(
    a: &Args,
    caches: &[Cache],
    weights: &[u64],
    q: &[f32],
    last: &[usize],
    scale: f32,
    n_ctx: usize,
) -> f64 {
    let per = a.seqs.div_ceil(a.threads);
    let wper = weights.len().div_ceil(a.layers * a.threads).max(1);
    std::thread::scope(|s| {
        let hs: Vec<_> = caches
            .chunks(per)
            .enumerate()
            .map(|(ti, mine)| {
                s.spawn(move || {
                    let mut sc = AttScratch::default();
                    let mut out = vec![0f32; q.len()];
                    let mut spent = 0f64;
                    let mut sink = 0u64;
                    for l in 0..a.layers {
                        let w0 = ((l * a.threads + ti) * wper).min(weights.len());
                        let w1 = (w0 + wper).min(weights.len());
                        sink = sink.wrapping_add(weights[w0..w1].iter().sum::<u64>());
                        let t0 = Instant::now();
                        for c in mine {
                            for h in 0..a.kv_heads {
                                let (keys, values) = head(c, a, l, h, n_ctx);
                                let o = &mut out[..q.len()];
                                attend(q, last, keys, values, scale, &mut sc, o);
                            }
                        }
                        spent += t0.elapsed().as_secs_f64();
                        sink = sink.wrapping_add(out[0].to_bits() as u64);
                    }
                    std::hint::black_box(sink);
                    spent
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or(0.0))
            .fold(0.0, f64::max)
    })
}

/// Head `h` of layer `l`, as `KvCache::head` slices it.
fn head<'a>(c: &'a Cache, a: &Args, l: usize, h: usize, n_ctx: usize) -> (Keys<'a>, Values<'a>) {
    let (hd, kvd) = (a.head_dim, a.kv_heads * a.head_dim);
    let tiles = n_ctx.div_ceil(16);
    let first = h * hd;
    match c {
        Cache::F16 { k, v } => {
            let (k, v) = (k.f16(), v.f16());
            let k0 = l * tiles * 16 * kvd + 16 * first;
            let v0 = l * n_ctx * kvd + first;
            (
                Keys::F16 {
                    k: &k[k0..],
                    k_block: 16 * kvd,
                },
                Values::F16 {
                    v: &v[v0..],
                    v_row: kvd,
                },
            )
        }
        Cache::Q { ty, k, v } => {
            let (tb, bb, nb) = (ty.key_tile_bytes(), ty.block_bytes(), kvd / QBLOCK);
            let (k, v) = (k.bytes(), v.bytes());
            let kat = (l * nb + first / QBLOCK) * tiles * tb;
            let vat = (l * nb + first / QBLOCK) * n_ctx * bb;
            (
                Keys::Quant(QKeys {
                    ty: *ty,
                    bytes: &k[kat..],
                    tile_stride: tb,
                    block_stride: tiles * tb,
                    blocks: hd / QBLOCK,
                }),
                Values::Quant(QValues {
                    ty: *ty,
                    bytes: &v[vat..],
                    row_stride: bb,
                    block_stride: n_ctx * bb,
                    blocks: hd / QBLOCK,
                }),
            )
        }
    }
}
