//! Every ISA of this machine against ggml's own bytes on awkward blocks
//! (tests/fixtures/quant/q8_0-edges.txt, see make_q8_0_edges.py beside
//! it), and against the reference on random rows and on generated ties.

use super::*;
use rand::{Rng, SeedableRng};

fn ref_row(x: &[f32]) -> Vec<u8> {
    let mut y = vec![0u8; x.len() / 32 * 34];
    for (xb, yb) in x.chunks_exact(32).zip(y.chunks_exact_mut(34)) {
        legacy::q8_0(xb, yb);
    }
    y
}

fn fast_row(cpu: Cpu, x: &[f32]) -> Vec<u8> {
    let mut y = vec![0u8; x.len() / 32 * 34];
    row(cpu, x, &mut y);
    y
}

fn hex_bytes(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The fixture's blocks: (32 inputs, ggml's 34 bytes).
fn ggml_edges() -> Vec<(Vec<f32>, Vec<u8>)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/quant/q8_0-edges.txt"
    );
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (x, q) = l.split_once(' ').unwrap();
            let x = hex_bytes(x)
                .chunks_exact(4)
                .map(|b| f32::from_bits(u32::from_be_bytes([b[0], b[1], b[2], b[3]])))
                .collect::<Vec<_>>();
            assert_eq!(x.len(), 32);
            (x, hex_bytes(q))
        })
        .collect()
}

/// What went wrong in one block, readably.
fn diff(x: &[f32], got: &[u8], want: &[u8]) -> String {
    let d = |b: &[u8]| u16::from_le_bytes([b[0], b[1]]);
    let mut s = format!("d {:#06x} (want {:#06x})", d(got), d(want));
    for j in 0..32 {
        if got[2 + j] != want[2 + j] {
            s += &format!(
                "; x[{j}] = {:e} ({:#010x}): q {} (want {})",
                x[j],
                x[j].to_bits(),
                got[2 + j] as i8,
                want[2 + j] as i8
            );
        }
    }
    s
}

#[test]
fn every_isa_matches_ggml_on_edge_blocks() {
    let blocks = ggml_edges();
    assert!(blocks.len() > 400, "only {} fixture blocks", blocks.len());
    // The whole fixture as one row, and block by block for the messages.
    let x: Vec<f32> = blocks.iter().flat_map(|(x, _)| x.iter().copied()).collect();
    let want: Vec<u8> = blocks.iter().flat_map(|(_, q)| q.iter().copied()).collect();
    let mut bad = Vec::new();
    let rows = [("reference", ref_row(&x))].into_iter().chain(
        Cpu::all_available()
            .into_iter()
            .map(|c| ("", fast_row(c, &x))),
    );
    for (i, (name, got)) in rows.enumerate() {
        let name = if name.is_empty() {
            format!("{:?}", Cpu::all_available()[i - 1].isa())
        } else {
            name.to_string()
        };
        for (b, (xb, _)) in blocks.iter().enumerate() {
            let (g, w) = (&got[b * 34..][..34], &want[b * 34..][..34]);
            if g != w {
                bad.push(format!("{name} block {b}: {}", diff(xb, g, w)));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "{} blocks differ from ggml:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

/// Random rows at many magnitudes (bf16-rounded, as `convert` feeds it,
/// and full f32), a few blocks with a NaN, an infinity or a zero run.
#[test]
fn every_isa_matches_reference_on_random_rows() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(24);
    for round in 0..200 {
        let blocks = rng.gen_range(1..64);
        let scale = 10f32.powi(rng.gen_range(-38..38));
        let mut x: Vec<f32> = (0..blocks * 32)
            .map(|_| rng.gen_range(-1.0f32..1.0) * scale)
            .collect();
        if round % 2 == 0 {
            for v in &mut x {
                *v = half::bf16::from_f32(*v).to_f32();
            }
        }
        if round % 5 == 0 {
            let i = rng.gen_range(0..x.len());
            x[i] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0][round / 5 % 4];
        }
        let want = ref_row(&x);
        for cpu in Cpu::all_available() {
            assert!(fast_row(cpu, &x) == want, "{:?} round {round}", cpu.isa());
        }
    }
}

/// Ties of the rounding (x * id = k + 0.5 in f32) and their neighbours one
/// ulp away, for many scales: where a wrong rounding rule shows.
#[test]
fn every_isa_matches_reference_on_ties() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut x = Vec::new();
    for _ in 0..4000 {
        let amax = 10f32.powf(rng.gen_range(-30.0..30.0));
        let id = 1.0 / (amax / 127.0);
        x.push(if rng.gen() { amax } else { -amax });
        for _ in 0..31 {
            let k = rng.gen_range(-127..127) as f32 + 0.5;
            let v = k / id;
            x.push(match rng.gen_range(0..3) {
                0 => v,
                1 => v.next_up(),
                _ => v.next_down(),
            });
        }
    }
    let want = ref_row(&x);
    // Enough exact ties to mean something.
    let ties = x
        .chunks_exact(32)
        .map(|b| {
            let id = 1.0 / (b[0].abs() / 127.0);
            b[1..]
                .iter()
                .filter(|v| (**v * id).fract().abs() == 0.5)
                .count()
        })
        .sum::<usize>();
    assert!(ties > 10_000, "only {ties} exact ties");
    for cpu in Cpu::all_available() {
        let got = fast_row(cpu, &x);
        for (b, (g, w)) in got.chunks_exact(34).zip(want.chunks_exact(34)).enumerate() {
            assert!(
                g == w,
                "{:?}: {}",
                cpu.isa(),
                diff(&x[b * 32..][..32], g, w)
            );
        }
    }
}
