//! The `--kl-divergence-base` file of llama-perplexity: writer and reader.
//!
//! Layout (little-endian; llama.cpp writes native order, which is LE on
//! every platform it supports in practice):
//!
//! ```text
//! "_logits_"                      8 bytes of magic
//! n_ctx    i32                    (llama.cpp reads it back as u32)
//! n_vocab  i32
//! n_chunk  i32
//! tokens   i32 x (n_chunk*n_ctx)  original tokens, BOS not substituted
//! per chunk, per scored token (n_ctx - 1 - n_ctx/2 rows):
//!   scale         f32             (max_logit - min_logit) / 65535
//!   min_log_prob  f32             log-prob stored for q = 0
//!   q             u16 x n_vocab   round((logit - min_logit) / scale)
//!   padding       u16             only if n_vocab is odd (zero)
//! ```
//!
//! so a row is `nv = 2*((n_vocab+1)/2) + 4` u16 values and the stored
//! log-probability of token `i` is `scale * q[i] + min_log_prob`. `min_logit`
//! is clamped to `max_logit - 16`, so tokens more than 16 nats below the top
//! all decode to the floor `min_log_prob`.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use crate::chunks::{check_n_ctx, scored_per_chunk};
use crate::error::{Error, ErrorKind, Result};
use crate::ppl::{ChunkNll, ScoredRows};

const MAGIC: &[u8; 8] = b"_logits_";
const HEADER_BYTES: u64 = 8 + 3 * 4;

/// u16 values per stored row: 2 f32 (as 4 u16) + n_vocab, rounded up to even.
pub fn row_len_u16(n_vocab: usize) -> usize {
    2 * n_vocab.div_ceil(2) + 4
}

/// llama.cpp's `nearest_int`: adding 1.5 * 2^23 leaves the rounded integer
/// (round half to even) in the low mantissa bits. Valid for |x| < 2^22.
fn nearest_int(x: f32) -> i32 {
    let bits = (x + 12_582_912.0f32).to_bits() as i32;
    (bits & 0x007f_ffff) - 0x0040_0000
}

/// Compresses one logits row into `out` (`row_len_u16(n_vocab)` values) as
/// llama.cpp's `log_softmax(n_vocab, logits, log_prob, tok)` does, and
/// returns that function's nll of `tok`, computed in f32 as there.
pub fn compress_row(logits: &[f32], tok: usize, out: &mut [u16]) -> f64 {
    let n_vocab = logits.len();
    let lsm = cria_kernels::LogSoftmax::new(logits);
    let max_logit = lsm.max();
    let mut min_logit = logits
        .iter()
        .skip(1)
        .fold(logits[0], |m, &x| if x < m { x } else { m });
    min_logit = min_logit.max(max_logit - 16.0);
    let log_sum_exp = lsm.sum_exp().ln() as f32;
    let min_log_prob = min_logit - max_logit - log_sum_exp;
    let scale = (max_logit - min_logit) / 65535.0;
    let (head, q) = out.split_at_mut(4);
    write_f32_as_u16(&mut head[0..2], scale);
    write_f32_as_u16(&mut head[2..4], min_log_prob);
    let q = &mut q[..row_len_u16(n_vocab) - 4];
    q.fill(0);
    if scale != 0.0 {
        let inv_scale = 1.0 / scale;
        for (qi, &l) in q.iter_mut().zip(logits) {
            // `as u16` truncates like C's int -> uint16_t conversion.
            *qi = if l > min_logit {
                nearest_int(inv_scale * (l - min_logit)) as u16
            } else {
                0
            };
        }
    }
    (max_logit + log_sum_exp - logits[tok]) as f64
}

/// An f32 occupies two u16 slots of a row, in memory order (LE halves).
fn write_f32_as_u16(dst: &mut [u16], v: f32) {
    let b = v.to_le_bytes();
    dst[0] = u16::from_le_bytes([b[0], b[1]]);
    dst[1] = u16::from_le_bytes([b[2], b[3]]);
}

fn read_f32_from_u16(src: &[u16]) -> f32 {
    let (a, b) = (src[0].to_le_bytes(), src[1].to_le_bytes());
    f32::from_le_bytes([a[0], a[1], b[0], b[1]])
}

/// One stored row: the base model's log-probabilities, compressed.
#[derive(Debug, Clone, Copy)]
pub struct CompressedLogProbs<'a> {
    pub scale: f32,
    pub min_log_prob: f32,
    /// (n_vocab) quantized values.
    pub q: &'a [u16],
}

impl<'a> CompressedLogProbs<'a> {
    /// Views a full row of `row_len_u16(n_vocab)` values (n_vocab >= 1).
    pub fn from_row(row: &'a [u16], n_vocab: usize) -> CompressedLogProbs<'a> {
        CompressedLogProbs {
            scale: read_f32_from_u16(&row[0..2]),
            min_log_prob: read_f32_from_u16(&row[2..4]),
            q: &row[4..4 + n_vocab],
        }
    }

    /// Decoded log-probability of token `i`: `scale * q[i] + min_log_prob` in f32.
    pub fn log_prob(&self, i: usize) -> f32 {
        self.scale * self.q[i] as f32 + self.min_log_prob
    }
}

/// The header of a base file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseFileHeader {
    pub n_ctx: usize,
    pub n_vocab: usize,
    pub n_chunk: usize,
    /// (n_chunk * n_ctx) the evaluated tokens.
    pub tokens: Vec<u32>,
}

impl BaseFileHeader {
    /// Rows (scored tokens) per chunk.
    pub fn n_scored(&self) -> usize {
        scored_per_chunk(self.n_ctx)
    }

    /// Bytes of one chunk's log-probabilities.
    pub fn chunk_bytes(&self) -> u64 {
        (self.n_scored() * row_len_u16(self.n_vocab) * 2) as u64
    }

    /// Total file size the header implies.
    pub fn file_bytes(&self) -> u64 {
        HEADER_BYTES + 4 * self.tokens.len() as u64 + self.n_chunk as u64 * self.chunk_bytes()
    }

    /// Fails unless the file was made with the model's vocabulary size.
    pub fn check_vocab(&self, model_n_vocab: usize) -> Result<()> {
        if self.n_vocab != model_n_vocab {
            return Err(ErrorKind::VocabMismatch {
                file: self.n_vocab,
                model: model_n_vocab,
            }
            .into());
        }
        Ok(())
    }

    /// Fails unless `ours` starts with the file's tokens (e.g. the same text
    /// tokenized again: the file keeps only whole chunks, so `ours` may be longer).
    pub fn check_tokens(&self, ours: &[u32]) -> Result<()> {
        let mismatch = |index: usize, file: u32, o: u32| ErrorKind::TokensMismatch {
            index,
            file,
            ours: o,
            file_len: self.tokens.len(),
            ours_len: ours.len(),
        };
        for (i, (&f, &o)) in self.tokens.iter().zip(ours).enumerate() {
            if f != o {
                return Err(mismatch(i, f, o).into());
            }
        }
        if ours.len() < self.tokens.len() {
            let i = ours.len();
            return Err(mismatch(i, self.tokens[i], u32::MAX).into());
        }
        Ok(())
    }
}

/// Writes a base file as `llama-perplexity --kl-divergence-base FILE` does.
#[derive(Debug)]
pub struct BaseFileWriter<W: Write> {
    out: W,
    n_ctx: usize,
    n_vocab: usize,
    n_chunk: usize,
    written: usize,
    /// (n_scored * nv) one chunk's compressed rows, reused.
    rows: Vec<u16>,
    bytes: Vec<u8>,
}

impl BaseFileWriter<BufWriter<File>> {
    /// Creates `path` and writes the header.
    pub fn create(
        path: impl AsRef<Path>,
        n_ctx: usize,
        n_vocab: usize,
        n_chunk: usize,
        tokens: &[u32],
    ) -> Result<Self> {
        let p = path.as_ref();
        let f = File::create(p).map_err(|e| Error::io(p.display().to_string(), e))?;
        BaseFileWriter::new(BufWriter::new(f), n_ctx, n_vocab, n_chunk, tokens)
    }
}

impl<W: Write> BaseFileWriter<W> {
    /// Writes the header and the first `n_chunk * n_ctx` of `tokens`
    /// ([`crate::Chunks::tokens`] is exactly that).
    pub fn new(
        mut out: W,
        n_ctx: usize,
        n_vocab: usize,
        n_chunk: usize,
        tokens: &[u32],
    ) -> Result<Self> {
        check_n_ctx(n_ctx)?;
        for (field, v) in [("n_ctx", n_ctx), ("n_vocab", n_vocab), ("n_chunk", n_chunk)] {
            if v > i32::MAX as usize || (field == "n_vocab" && v == 0) {
                return Err(ErrorKind::BadHeader {
                    field,
                    value: v as i64,
                }
                .into());
            }
        }
        let n_tok = n_chunk * n_ctx;
        if tokens.len() < n_tok {
            return Err(ErrorKind::NotEnoughTokens {
                have: tokens.len(),
                need: n_tok,
                n_ctx,
            }
            .into());
        }
        let tokens = &tokens[..n_tok];
        if let Some((index, &id)) = tokens
            .iter()
            .enumerate()
            .find(|(_, &t)| t as usize >= n_vocab)
        {
            return Err(ErrorKind::TokenOutOfRange { index, id, n_vocab }.into());
        }
        let mut bytes = Vec::with_capacity(HEADER_BYTES as usize + 4 * n_tok);
        bytes.extend_from_slice(MAGIC);
        for v in [n_ctx, n_vocab, n_chunk] {
            bytes.extend_from_slice(&(v as i32).to_le_bytes());
        }
        for &t in tokens {
            bytes.extend_from_slice(&t.to_le_bytes());
        }
        out.write_all(&bytes)
            .map_err(|e| Error::io("base file", e))?;
        Ok(BaseFileWriter {
            out,
            n_ctx,
            n_vocab,
            n_chunk,
            written: 0,
            rows: vec![0; scored_per_chunk(n_ctx) * row_len_u16(n_vocab)],
            bytes,
        })
    }

    /// Compresses and writes one chunk's scored rows (same `logits` and
    /// `chunk_tokens` conventions as [`crate::PerplexityAccumulator::add_chunk`]).
    /// Returns the chunk's nll sums, computed as llama.cpp does in this mode
    /// (feed them to [`crate::PerplexityAccumulator::add_nll`]).
    pub fn write_chunk_logits(&mut self, logits: &[f32], chunk_tokens: &[u32]) -> Result<ChunkNll> {
        if chunk_tokens.len() != self.n_ctx {
            return Err(ErrorKind::ChunkTokens {
                expected: self.n_ctx,
                got: chunk_tokens.len(),
            }
            .into());
        }
        if self.written >= self.n_chunk {
            return Err(ErrorKind::ChunkCount {
                expected: self.n_chunk,
                got: self.written + 1,
            }
            .into());
        }
        let rows = ScoredRows::new(logits, chunk_tokens, self.n_vocab)?;
        let nv = row_len_u16(self.n_vocab);
        let mut c = ChunkNll::default();
        for ((row, tok), out) in rows.iter().zip(self.rows.chunks_exact_mut(nv)) {
            let v = compress_row(row, tok, out);
            c.nll += v;
            c.nll2 += v * v;
            c.count += 1;
        }
        self.bytes.clear();
        for &q in &self.rows {
            self.bytes.extend_from_slice(&q.to_le_bytes());
        }
        self.out
            .write_all(&self.bytes)
            .map_err(|e| Error::io("base file", e))?;
        self.written += 1;
        Ok(c)
    }

    /// Checks that every announced chunk was written, flushes, and returns the writer.
    pub fn finish(mut self) -> Result<W> {
        if self.written != self.n_chunk {
            return Err(ErrorKind::ChunkCount {
                expected: self.n_chunk,
                got: self.written,
            }
            .into());
        }
        self.out.flush().map_err(|e| Error::io("base file", e))?;
        Ok(self.out)
    }
}

/// Reads a base file chunk by chunk, validating as it goes.
#[derive(Debug)]
pub struct BaseFileReader<R: Read> {
    input: R,
    header: BaseFileHeader,
    offset: u64,
    chunks_read: usize,
    bytes: Vec<u8>,
}

/// One chunk of stored rows, reused between reads.
#[derive(Debug, Clone, Default)]
pub struct BaseChunk {
    n_vocab: usize,
    /// (n_scored * nv) the raw rows.
    rows: Vec<u16>,
}

impl BaseChunk {
    /// Number of rows (scored tokens).
    pub fn len(&self) -> usize {
        if self.n_vocab == 0 {
            0
        } else {
            self.rows.len() / row_len_u16(self.n_vocab)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Row `j`, for the logits at position `first + j`.
    pub fn row(&self, j: usize) -> Option<CompressedLogProbs<'_>> {
        let nv = row_len_u16(self.n_vocab);
        let r = self.rows.get(j * nv..(j + 1) * nv)?;
        Some(CompressedLogProbs::from_row(r, self.n_vocab))
    }

    /// All rows in order.
    pub fn rows(&self) -> impl Iterator<Item = CompressedLogProbs<'_>> + '_ {
        let n = self.n_vocab;
        self.rows
            .chunks_exact(row_len_u16(n.max(1)))
            .map(move |r| CompressedLogProbs::from_row(r, n))
    }
}

impl BaseFileReader<BufReader<File>> {
    /// Opens `path`, reads the header and checks the file size against it.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let p = path.as_ref();
        let name = p.display().to_string();
        let f = File::open(p).map_err(|e| Error::io(name.clone(), e))?;
        let actual = f.metadata().map_err(|e| Error::io(name, e))?.len();
        let r = BaseFileReader::new(BufReader::new(f))?;
        let expected = r.header.file_bytes();
        if actual != expected {
            return Err(ErrorKind::WrongFileSize { expected, actual }.into());
        }
        Ok(r)
    }
}

impl<R: Read> BaseFileReader<R> {
    /// Reads and validates the header from any reader. Truncation of the
    /// chunk data is reported by [`BaseFileReader::read_chunk`].
    pub fn new(mut input: R) -> Result<Self> {
        let mut head = [0u8; HEADER_BYTES as usize];
        read_exact_at(&mut input, &mut head, 0)?;
        let mut found = [0u8; 8];
        found.copy_from_slice(&head[..8]);
        if &found != MAGIC {
            return Err(ErrorKind::BadMagic { found }.into());
        }
        let field = |i: usize| {
            i32::from_le_bytes([
                head[8 + 4 * i],
                head[9 + 4 * i],
                head[10 + 4 * i],
                head[11 + 4 * i],
            ])
        };
        // n_ctx is a u32 for llama.cpp's reader; a "negative" one is absurd either way.
        let (n_ctx, n_vocab, n_chunk) = (field(0), field(1), field(2));
        if n_ctx < 3 {
            return Err(ErrorKind::BadHeader {
                field: "n_ctx",
                value: n_ctx as i64,
            }
            .into());
        }
        if n_vocab <= 0 {
            return Err(ErrorKind::BadHeader {
                field: "n_vocab",
                value: n_vocab as i64,
            }
            .into());
        }
        if n_chunk < 0 {
            return Err(ErrorKind::BadHeader {
                field: "n_chunk",
                value: n_chunk as i64,
            }
            .into());
        }
        let (n_ctx, n_vocab, n_chunk) = (n_ctx as usize, n_vocab as usize, n_chunk as usize);
        let n_tok = n_ctx as u64 * n_chunk as u64;
        // Read through `take` so a lying header cannot make us allocate more
        // than the data that is actually there.
        let mut raw = Vec::new();
        let want = 4 * n_tok;
        (&mut input)
            .take(want)
            .read_to_end(&mut raw)
            .map_err(|e| Error::io("base file", e))?;
        if (raw.len() as u64) < want {
            return Err(ErrorKind::Truncated {
                offset: HEADER_BYTES + raw.len() as u64,
                needed: want - raw.len() as u64,
            }
            .into());
        }
        let mut tokens = Vec::with_capacity(n_tok as usize);
        for (index, b) in raw.chunks_exact(4).enumerate() {
            let id = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            if id as usize >= n_vocab {
                return Err(ErrorKind::TokenOutOfRange { index, id, n_vocab }.into());
            }
            tokens.push(id);
        }
        Ok(BaseFileReader {
            input,
            offset: HEADER_BYTES + want,
            header: BaseFileHeader {
                n_ctx,
                n_vocab,
                n_chunk,
                tokens,
            },
            chunks_read: 0,
            bytes: Vec::new(),
        })
    }

    pub fn header(&self) -> &BaseFileHeader {
        &self.header
    }

    /// Reads the next chunk into `chunk` (its buffers are reused); `Ok(false)`
    /// after the last one.
    pub fn read_chunk(&mut self, chunk: &mut BaseChunk) -> Result<bool> {
        if self.chunks_read >= self.header.n_chunk {
            return Ok(false);
        }
        let n_vocab = self.header.n_vocab;
        let nv = row_len_u16(n_vocab);
        let len = self.header.n_scored() * nv;
        self.bytes.resize(2 * len, 0);
        read_exact_at(&mut self.input, &mut self.bytes, self.offset)?;
        chunk.n_vocab = n_vocab;
        chunk.rows.clear();
        chunk.rows.extend(
            self.bytes
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]])),
        );
        for (j, r) in chunk.rows.chunks_exact(nv).enumerate() {
            let row = CompressedLogProbs::from_row(r, n_vocab);
            // The writer's scale is (max - min)/65535 with max - min in [0, 16].
            let ok = row.scale.is_finite() && row.scale >= 0.0 && row.min_log_prob.is_finite();
            if !ok {
                return Err(ErrorKind::BadRow {
                    offset: self.offset + (j * nv * 2) as u64,
                    scale: row.scale,
                    min_log_prob: row.min_log_prob,
                }
                .into());
            }
        }
        self.offset += 2 * len as u64;
        self.chunks_read += 1;
        Ok(true)
    }
}

fn read_exact_at<R: Read>(input: &mut R, buf: &mut [u8], offset: u64) -> Result<()> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => {
                return Err(ErrorKind::Truncated {
                    offset: offset + got as u64,
                    needed: (buf.len() - got) as u64,
                }
                .into())
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("base file", e)),
        }
    }
    Ok(())
}
