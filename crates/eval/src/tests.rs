//! Unit tests: chunk indices, perplexity arithmetic, the base file's exact
//! bytes and round trip, KL statistics against hand-computed values.

use crate::kld::{test_cf, test_percentile};
use crate::*;

/// Small deterministic generator for test logits (xorshift32).
struct Lcg(u32);

impl Lcg {
    fn next_f32(&mut self, lo: f32, hi: f32) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        lo + (hi - lo) * (self.0 as f32 / u32::MAX as f32)
    }

    fn logits(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next_f32(-8.0, 8.0)).collect()
    }
}

fn true_log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = row
        .iter()
        .map(|&l| (l as f64 - max).exp())
        .sum::<f64>()
        .ln();
    row.iter().map(|&l| l as f64 - max - lse).collect()
}

#[test]
fn chunks_follow_llama_perplexity_indices() {
    let tokens: Vec<u32> = (100..120).collect();
    let chunks = Chunks::new(&tokens, 8, true, 1, None).unwrap();
    assert_eq!(chunks.n_chunk(), 2, "20 / 8 = 2 chunks, 4 tokens dropped");
    assert_eq!(chunks.tokens(), &tokens[..16]);
    assert_eq!((chunks.first(), chunks.n_scored()), (4, 3));
    let c = chunks.chunk(1).unwrap();
    assert_eq!(c.start(), 8);
    assert_eq!(c.tokens(), &tokens[8..16]);
    assert_eq!(c.input_tokens()[0], 1, "BOS replaces the first token");
    assert_eq!(&c.input_tokens()[1..], &tokens[9..16]);
    // logits at positions 4, 5, 6 score tokens 5, 6, 7 of the window.
    assert_eq!(c.scored_tokens(), &[113, 114, 115]);
    assert!(chunks.chunk(2).is_none());
    assert_eq!(chunks.iter().count(), 2);

    let no_bos = Chunks::new(&tokens, 8, false, 1, Some(1)).unwrap();
    assert_eq!(no_bos.n_chunk(), 1);
    let c = no_bos.chunk(0).unwrap();
    assert_eq!(c.input_tokens(), c.tokens());

    // Odd n_ctx: first = 3, scored positions 3..5 score tokens 4..6.
    let c7 = Chunks::new(&tokens, 7, false, 0, None).unwrap();
    assert_eq!((c7.first(), c7.n_scored()), (3, 3));
    assert_eq!(c7.chunk(0).unwrap().scored_tokens(), &[104, 105, 106]);
}

#[test]
fn chunks_reject_short_input_and_tiny_context() {
    let tokens: Vec<u32> = (0..15).collect();
    let err = Chunks::new(&tokens, 8, true, 1, None).unwrap_err();
    assert!(matches!(
        err.kind(),
        ErrorKind::NotEnoughTokens {
            have: 15,
            need: 16,
            ..
        }
    ));
    let err = Chunks::new(&tokens, 2, true, 1, None).unwrap_err();
    assert!(matches!(
        err.kind(),
        ErrorKind::ContextTooSmall { n_ctx: 2 }
    ));
}

/// Rows for n_ctx = 6 (first = 3, 2 scored): token 0 has p = 0.5, then 0.25.
fn two_token_example() -> (Vec<f32>, Vec<u32>) {
    let logits = vec![0.5f32.ln(), 0.5f32.ln(), 0.25f32.ln(), 0.75f32.ln()];
    (logits, vec![9, 9, 9, 9, 0, 0])
}

#[test]
fn perplexity_matches_hand_computation() {
    let (logits, tokens) = two_token_example();
    let mut acc = PerplexityAccumulator::new(2);
    let ppl = acc.add_chunk(&logits, &tokens.iter().map(|&t| t % 2).collect::<Vec<_>>());
    // token 9 % 2 = 1 at positions 0..4 is never scored; only positions 4, 5 are.
    let ppl = ppl.unwrap();
    let ln2 = std::f64::consts::LN_2;
    // nll = ln 2, ln 4: mean 1.5 ln 2, variance 0.25 (ln 2)^2 over n - 1 = 1.
    assert!((ppl - 2f64.powf(1.5)).abs() < 1e-6);
    let est = acc.estimate().unwrap();
    let unc = est.uncertainty.unwrap();
    assert!((unc - 2f64.powf(1.5) * 0.5 * ln2).abs() < 1e-5, "{unc}");
    assert_eq!(acc.progress_line(), "[1]2.8284,");
    assert_eq!(
        est.to_string(),
        format!("Final estimate: PPL = 2.8284 +/- {unc:.5}")
    );
    assert!(est
        .to_string()
        .starts_with("Final estimate: PPL = 2.8284 +/- 0.980"));
    assert!(acc
        .verbose_line(0)
        .starts_with("       0  2.8284  1.039721  0.34657"));

    // The extra last row (position n_ctx - 1) is accepted and ignored.
    let mut with_last = PerplexityAccumulator::new(2);
    let mut l = logits.clone();
    l.extend([100.0, -100.0]);
    with_last.add_chunk(&l, &[1, 1, 1, 1, 0, 0]).unwrap();
    assert_eq!(with_last.totals(), acc.totals());
}

#[test]
fn perplexity_edge_cases() {
    let mut acc = PerplexityAccumulator::new(4);
    assert!(matches!(
        acc.estimate().unwrap_err().kind(),
        ErrorKind::Empty
    ));
    // Uniform logits: ppl = n_vocab exactly, zero variance -> llama.cpp's error line.
    acc.add_chunk(&[0.0; 8], &[0, 1, 2, 3, 0, 1]).unwrap();
    let est = acc.estimate().unwrap();
    assert!((est.ppl - 4.0).abs() < 1e-9);
    assert_eq!(est.uncertainty, None);
    assert_eq!(
        est.to_string(),
        "Unexpected negative standard deviation of log(prob)"
    );
    // Bad shapes, ids and values.
    let e = acc.add_chunk(&[0.0; 7], &[0, 1, 2, 3, 0, 1]).unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::LogitsShape { .. }));
    let e = acc.add_chunk(&[0.0; 8], &[0, 1, 2, 3, 0, 4]).unwrap_err();
    assert!(matches!(
        e.kind(),
        ErrorKind::TokenOutOfRange {
            id: 4,
            index: 5,
            ..
        }
    ));
    let mut bad = [0.0f32; 8];
    bad[6] = f32::NAN;
    let e = acc.add_chunk(&bad, &[0, 1, 2, 3, 0, 1]).unwrap_err();
    assert!(matches!(
        e.kind(),
        ErrorKind::BadLogit {
            row: 1,
            index: 2,
            ..
        }
    ));
    // -inf logits are fine (masked tokens).
    let mut masked = [0.0f32; 8];
    masked[1] = f32::NEG_INFINITY;
    acc.add_chunk(&masked, &[0, 1, 2, 3, 0, 1]).unwrap();
}

#[test]
fn base_file_bytes_are_llama_cpp_layout() {
    // n_ctx 3: first = 1, one scored row (position 1 scores token 2).
    let logits = [1.0f32, 0.0, -20.0];
    let mut file = Vec::new();
    let mut w = BaseFileWriter::new(&mut file, 3, 3, 1, &[0, 1, 2, 7]).unwrap();
    let c = w.write_chunk_logits(&logits, &[0, 1, 2]).unwrap();
    w.finish().unwrap();

    let mut expect = b"_logits_".to_vec();
    for v in [3i32, 3, 1, 0, 1, 2] {
        expect.extend(v.to_le_bytes());
    }
    // min logit -20 is clamped to max - 16 = -15.
    let sum_exp = 1.0f64 + (-1.0f32).exp() as f64 + (-21.0f32).exp() as f64;
    let lse = sum_exp.ln() as f32;
    let scale = 16.0f32 / 65535.0;
    expect.extend(scale.to_le_bytes());
    expect.extend((-15.0f32 - 1.0 - lse).to_le_bytes());
    // q = round((l + 15) / scale): 65535, round(61439.06) = 61439, and 0
    // below the floor; then one u16 of padding as n_vocab is odd.
    for q in [65535u16, 61439, 0, 0] {
        expect.extend(q.to_le_bytes());
    }
    assert_eq!(file, expect);
    assert_eq!(c.count, 1);
    assert!((c.nll - (1.0 + lse as f64 - -20.0)).abs() < 1e-5);
}

#[test]
fn base_file_round_trip_and_error_bound() {
    let n_vocab = 37; // odd: exercises the padding u16
    let n_ctx = 10;
    let mut rng = Lcg(12345);
    let tokens: Vec<u32> = (0..25).map(|i| (i * 7 % n_vocab) as u32).collect();
    let chunks = Chunks::new(&tokens, n_ctx, true, 1, None).unwrap();
    let all_logits: Vec<Vec<f32>> = (0..chunks.n_chunk())
        .map(|_| rng.logits((chunks.n_scored() + 1) * n_vocab))
        .collect();

    let mut file = Vec::new();
    let mut w =
        BaseFileWriter::new(&mut file, n_ctx, n_vocab, chunks.n_chunk(), chunks.tokens()).unwrap();
    let mut ppl_file = PerplexityAccumulator::new(n_vocab);
    let mut ppl_plain = PerplexityAccumulator::new(n_vocab);
    for (chunk, logits) in chunks.iter().zip(&all_logits) {
        ppl_file.add_nll(w.write_chunk_logits(logits, chunk.tokens()).unwrap());
        ppl_plain.add_chunk(logits, chunk.tokens()).unwrap();
    }
    // The two arithmetic variants agree to float precision.
    assert!((ppl_file.ppl() - ppl_plain.ppl()).abs() < 1e-4 * ppl_plain.ppl());
    assert!(matches!(
        w.write_chunk_logits(&all_logits[0], chunks.chunk(0).unwrap().tokens())
            .unwrap_err()
            .kind(),
        ErrorKind::ChunkCount { .. }
    ));
    w.finish().unwrap();

    let mut r = BaseFileReader::new(&file[..]).unwrap();
    let h = r.header().clone();
    assert_eq!((h.n_ctx, h.n_vocab, h.n_chunk), (n_ctx, n_vocab, 2));
    assert_eq!(h.tokens, chunks.tokens());
    assert_eq!(h.file_bytes(), file.len() as u64);
    h.check_vocab(n_vocab).unwrap();
    h.check_tokens(&tokens).unwrap();

    let mut stored = BaseChunk::default();
    for logits in &all_logits {
        assert!(r.read_chunk(&mut stored).unwrap());
        assert_eq!(stored.len(), chunks.n_scored());
        for (j, row) in stored.rows().enumerate() {
            let raw = &logits[j * n_vocab..(j + 1) * n_vocab];
            let truth = true_log_softmax(raw);
            let top = truth.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            for (i, &t) in truth.iter().enumerate() {
                let got = row.log_prob(i) as f64;
                if t >= top - 16.0 {
                    // Half a quantization step plus f32 rounding.
                    assert!(
                        (got - t).abs() <= row.scale as f64 * 0.5 + 1e-5,
                        "{got} vs {t}"
                    );
                } else {
                    assert_eq!(got, row.min_log_prob as f64, "below the window: the floor");
                }
            }
        }
    }
    assert!(!r.read_chunk(&mut stored).unwrap());
}

fn small_file() -> Vec<u8> {
    let mut file = Vec::new();
    let mut w = BaseFileWriter::new(&mut file, 4, 3, 1, &[0, 1, 2, 0]).unwrap();
    w.write_chunk_logits(&[0.0, 1.0, 2.0], &[0, 1, 2, 0])
        .unwrap();
    w.finish().unwrap();
    file
}

#[test]
fn base_file_reader_validates() {
    let file = small_file();
    let kind = |bytes: &[u8]| {
        BaseFileReader::new(bytes)
            .map(|_| ())
            .unwrap_err()
            .into_kind()
    };

    let mut bad = file.clone();
    bad[0] = b'X';
    assert!(matches!(kind(&bad), ErrorKind::BadMagic { .. }));
    assert!(matches!(
        kind(&file[..10]),
        ErrorKind::Truncated {
            offset: 10,
            needed: 10
        }
    ));
    assert!(matches!(
        kind(&file[..25]),
        ErrorKind::Truncated {
            offset: 25,
            needed: 11
        }
    ));
    let mut neg = file.clone();
    neg[12..16].copy_from_slice(&(-5i32).to_le_bytes());
    assert!(matches!(
        kind(&neg),
        ErrorKind::BadHeader {
            field: "n_vocab",
            value: -5
        }
    ));
    let mut tok = file.clone();
    tok[24..28].copy_from_slice(&3u32.to_le_bytes());
    assert!(matches!(
        kind(&tok),
        ErrorKind::TokenOutOfRange {
            index: 1,
            id: 3,
            ..
        }
    ));

    // Truncated chunk data is caught when reading the chunk.
    let mut r = BaseFileReader::new(&file[..file.len() - 1]).unwrap();
    let mut c = BaseChunk::default();
    assert!(matches!(
        r.read_chunk(&mut c).unwrap_err().kind(),
        ErrorKind::Truncated { needed: 1, .. }
    ));

    let mut nan = file.clone();
    nan[36..40].copy_from_slice(&f32::NAN.to_le_bytes());
    let mut r = BaseFileReader::new(&nan[..]).unwrap();
    assert!(matches!(
        r.read_chunk(&mut c).unwrap_err().kind(),
        ErrorKind::BadRow { offset: 36, .. }
    ));

    let h = BaseFileReader::new(&file[..]).unwrap().header().clone();
    assert!(matches!(
        h.check_vocab(4).unwrap_err().kind(),
        ErrorKind::VocabMismatch { file: 3, model: 4 }
    ));
    assert!(matches!(
        h.check_tokens(&[0, 2, 2, 0]).unwrap_err().kind(),
        ErrorKind::TokensMismatch {
            index: 1,
            file: 1,
            ours: 2,
            ..
        }
    ));
    assert!(matches!(
        h.check_tokens(&[0, 1]).unwrap_err().kind(),
        ErrorKind::TokensMismatch { index: 2, .. }
    ));
}

#[test]
fn base_file_open_checks_size() {
    let dir = std::env::temp_dir().join(format!("cria-eval-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("base.kld");
    let file = small_file();
    std::fs::write(&path, &file).unwrap();
    let r = BaseFileReader::open(&path).unwrap();
    assert_eq!(r.header().n_chunk, 1);
    std::fs::write(&path, &file[..file.len() - 2]).unwrap();
    let e = BaseFileReader::open(&path).unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::WrongFileSize { .. }), "{e}");
    let e = BaseFileReader::open(dir.join("missing")).unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::Io { .. }));
    std::fs::remove_dir_all(&dir).unwrap();
}

fn compressed(logits: &[f32]) -> Vec<u16> {
    let mut row = vec![0u16; row_len_u16(logits.len())];
    compress_row(logits, 0, &mut row);
    row
}

#[test]
fn kld_of_identical_distributions_is_zero() {
    // Equal logits: scale 0, stored exactly, so KLD is exactly 0.
    let logits = [0.3f32; 5];
    let row = compressed(&logits);
    let mut k = KlDivergence::new(5);
    let t = k
        .add_token(CompressedLogProbs::from_row(&row, 5), &logits, 2)
        .unwrap();
    assert_eq!(t.kld, 0.0);
    assert_eq!(t.p_diff, 0.0);

    // General logits: zero up to the compression error.
    let mut k = KlDivergence::new(50);
    let mut rng = Lcg(99);
    for _ in 0..20 {
        let logits = rng.logits(50);
        let row = compressed(&logits);
        let t = k
            .add_token(CompressedLogProbs::from_row(&row, 50), &logits, 7)
            .unwrap();
        assert!(t.kld.abs() < 2e-4, "{}", t.kld);
        assert!(t.p_diff.abs() < 1e-4);
    }
    assert_eq!(k.report().unwrap().same_top.value, 1.0);
}

#[test]
fn kld_hand_example() {
    // base p = (0.5, 0.5) (stored exactly), current q = (0.75, 0.25):
    // KL(p||q) = 0.5 ln(0.5/0.75) + 0.5 ln(0.5/0.25) = 0.5 ln(4/3).
    let base = compressed(&[0.0, 0.0]);
    let mut k = KlDivergence::new(2);
    let t = k
        .add_token(
            CompressedLogProbs::from_row(&base, 2),
            &[0.75f32.ln(), 0.25f32.ln()],
            0,
        )
        .unwrap();
    assert!(
        (t.kld - 0.5 * (4.0f64 / 3.0).ln()).abs() < 1e-6,
        "{}",
        t.kld
    );
    assert!((t.p_diff - 0.25).abs() < 1e-6);
    let r = k.report().unwrap();
    assert_eq!(r.count, 1);
    assert_eq!(r.same_top.value, 1.0, "both argmax at token 0");
    // ln PPL(Q) - ln PPL(base) = -ln 0.75 + ln 0.5
    assert!((r.ln_ppl_ratio.value - (0.5f64.ln() - 0.75f64.ln())).abs() < 1e-6);
    let e = k
        .add_token(CompressedLogProbs::from_row(&base, 2), &[0.0, 0.0, 0.0], 0)
        .unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::LogitsShape { .. }));
    assert!(matches!(
        KlDivergence::new(2).report().unwrap_err().kind(),
        ErrorKind::Empty
    ));
}

#[test]
fn percentiles_interpolate_like_llama_cpp() {
    let v = [1.0f32, 2.0, 3.0, 4.0, 5.0];
    assert_eq!(test_percentile(&v, 0.5), 3.0);
    assert!((test_percentile(&v, 0.9) - 4.6).abs() < 1e-6);
    assert_eq!(test_percentile(&v, 0.0), 1.0);
    assert_eq!(test_percentile(&v, 1.0), 5.0);
    assert_eq!(test_cf(f64::NAN, 10, 6), "       nan");
    assert_eq!(test_cf(-f64::NAN, 6, 3), "  -nan");
    assert_eq!(test_cf(f64::INFINITY, 6, 3), "   inf");
    assert_eq!(test_cf(0.5, 10, 6), "  0.500000");
}

#[test]
fn kl_report_layout() {
    let n_vocab = 20;
    let n_ctx = 64;
    let mut rng = Lcg(7);
    let tokens: Vec<u32> = (0..4 * n_ctx).map(|i| (i * 13 % n_vocab) as u32).collect();
    let chunks = Chunks::new(&tokens, n_ctx, true, 0, None).unwrap();
    let mut file = Vec::new();
    let mut w =
        BaseFileWriter::new(&mut file, n_ctx, n_vocab, chunks.n_chunk(), chunks.tokens()).unwrap();
    let mut current = Vec::new();
    for chunk in chunks.iter() {
        let base = rng.logits(chunks.n_scored() * n_vocab);
        w.write_chunk_logits(&base, chunk.tokens()).unwrap();
        // The "quantized" model: base logits plus noise.
        current.push(
            base.iter()
                .map(|&l| l + rng.next_f32(-0.5, 0.5))
                .collect::<Vec<f32>>(),
        );
    }
    w.finish().unwrap();

    let mut r = BaseFileReader::new(&file[..]).unwrap();
    let chunks = Chunks::from_base_file(r.header(), true, 0).unwrap();
    let mut k = KlDivergence::new(n_vocab);
    let mut stored = BaseChunk::default();
    let mut lines = vec![CHUNK_HEADER.to_string()];
    for (chunk, logits) in chunks.iter().zip(&current) {
        r.read_chunk(&mut stored).unwrap();
        k.add_chunk(&stored, logits, chunk.tokens()).unwrap();
        lines.push(k.chunk_line());
    }
    assert!(k.count() >= MIN_TOKENS_FOR_REPORT);
    assert!(lines[4].starts_with("   4    "), "{}", lines[4]);
    assert_eq!(lines[4].matches('±').count(), 5);
    let report = k.report().unwrap();
    assert!(
        report.kld.value > 0.0 && report.kld.value < 0.2,
        "{report:?}"
    );
    assert!(report.kld_min <= report.kld_median && report.kld_median <= report.kld_max);
    let text = report.to_string();
    let out: Vec<&str> = text.lines().collect();
    assert_eq!(out.len(), 39);
    assert_eq!(out[0], "====== Perplexity statistics ======");
    assert!(out[1].starts_with("Mean PPL(Q)                   : "));
    assert_eq!(out[8], "====== KL divergence statistics ======");
    assert!(out[9].starts_with("Mean    KLD: "));
    assert!(out[17].starts_with(" 5.0%   KLD: "));
    assert_eq!(out[22], "====== Token probability statistics ======");
    assert!(out[37].starts_with("RMS Δp    : "));
    assert!(out[38].starts_with("Same top p: ") && out[38].ends_with(" %"));
}
