//! SentencePiece's `tokenizer.model` (a `ModelProto` protobuf), read by
//! hand: only the fields a BPE vocabulary needs, every length checked
//! against the bytes left.
//!
//! ```text
//! ModelProto     { 1: repeated SentencePiece pieces; 2: TrainerSpec; 3: NormalizerSpec }
//! SentencePiece  { 1: string piece; 2: float score; 3: Type type (NORMAL=1 ... BYTE=6) }
//! TrainerSpec    { 3: model_type (UNIGRAM=1, BPE=2); 40/41/42/43: unk/bos/eos/pad id }
//! NormalizerSpec { 3: bool add_dummy_prefix (default true) }
//! ```

use crate::tokmeta::{TokMeta, BYTE, CONTROL, MAX_TOKENS, NORMAL, UNKNOWN, UNUSED};

/// What the model file holds, as read.
#[derive(Debug, Clone, PartialEq)]
pub struct SpmModel {
    /// (piece, score, type) in id order.
    pub pieces: Vec<(String, f32, i32)>,
    /// 1 unigram, 2 BPE (the proto's default is unigram).
    pub model_type: i64,
    pub unk_id: i64,
    pub bos_id: i64,
    pub eos_id: i64,
    pub pad_id: i64,
    pub add_dummy_prefix: bool,
}

struct Cur<'a> {
    b: &'a [u8],
    pos: usize,
}

type R<T> = std::result::Result<T, String>;

impl<'a> Cur<'a> {
    fn done(&self) -> bool {
        self.pos >= self.b.len()
    }

    fn varint(&mut self) -> R<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let Some(&byte) = self.b.get(self.pos) else {
                return Err(format!("a varint runs past the end at byte {}", self.pos));
            };
            self.pos += 1;
            v |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(format!(
            "a varint longer than 10 bytes at byte {}",
            self.pos
        ))
    }

    fn take(&mut self, n: u64) -> R<&'a [u8]> {
        if n > (self.b.len() - self.pos) as u64 {
            return Err(format!(
                "a field of {n} bytes at byte {} runs past the end ({} left)",
                self.pos,
                self.b.len() - self.pos
            ));
        }
        let s = &self.b[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    /// (field number, wire type).
    fn key(&mut self) -> R<(u64, u8)> {
        let k = self.varint()?;
        Ok((k >> 3, (k & 7) as u8))
    }

    /// A field's payload: varint value, or bytes for length-delimited and
    /// fixed-width fields.
    fn value(&mut self, wire: u8) -> R<Field<'a>> {
        Ok(match wire {
            0 => Field::Varint(self.varint()?),
            1 => Field::Bytes(self.take(8)?),
            2 => {
                let n = self.varint()?;
                Field::Bytes(self.take(n)?)
            }
            5 => Field::Bytes(self.take(4)?),
            w => return Err(format!("wire type {w} at byte {}", self.pos)),
        })
    }
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn fields(b: &[u8], mut f: impl FnMut(u64, Field) -> R<()>) -> R<()> {
    let mut c = Cur { b, pos: 0 };
    while !c.done() {
        let (num, wire) = c.key()?;
        let v = c.value(wire)?;
        f(num, v)?;
    }
    Ok(())
}

/// Parses a tokenizer.model.
pub fn parse(bytes: &[u8]) -> R<SpmModel> {
    let mut m = SpmModel {
        pieces: Vec::new(),
        model_type: 1,
        unk_id: 0,
        bos_id: 1,
        eos_id: 2,
        pad_id: -1,
        add_dummy_prefix: true,
    };
    let int = |v: &Field| match v {
        Field::Varint(x) => Ok(*x as i64 as i32 as i64),
        _ => Err("an integer field with the wrong wire type".to_string()),
    };
    fields(bytes, |num, v| {
        match (num, v) {
            (1, Field::Bytes(p)) => {
                if m.pieces.len() >= MAX_TOKENS {
                    return Err(format!("more than {MAX_TOKENS} pieces"));
                }
                let (mut piece, mut score, mut ty) = (String::new(), 0f32, NORMAL);
                fields(p, |n, v| {
                    match (n, v) {
                        (1, Field::Bytes(s)) => {
                            piece = std::str::from_utf8(s)
                                .map_err(|_| format!("piece #{} is not UTF-8", m.pieces.len()))?
                                .to_string()
                        }
                        (2, Field::Bytes(s)) if s.len() == 4 => {
                            score = f32::from_le_bytes([s[0], s[1], s[2], s[3]])
                        }
                        (3, Field::Varint(t)) if (1..=6).contains(&t) => ty = t as i32,
                        (3, Field::Varint(t)) => return Err(format!("piece type {t}")),
                        _ => {}
                    }
                    Ok(())
                })?;
                m.pieces.push((piece, score, ty));
            }
            (2, Field::Bytes(t)) => fields(t, |n, v| {
                match n {
                    3 => m.model_type = int(&v)?,
                    40 => m.unk_id = int(&v)?,
                    41 => m.bos_id = int(&v)?,
                    42 => m.eos_id = int(&v)?,
                    43 => m.pad_id = int(&v)?,
                    _ => {}
                }
                Ok(())
            })?,
            (3, Field::Bytes(t)) => fields(t, |n, v| {
                if let (3, Field::Varint(x)) = (n, v) {
                    m.add_dummy_prefix = x != 0;
                }
                Ok(())
            })?,
            _ => {}
        }
        Ok(())
    })?;
    if m.pieces.is_empty() {
        return Err("no pieces: not a SentencePiece model".into());
    }
    Ok(m)
}

impl SpmModel {
    /// The vocabulary as llama.cpp's converter writes it
    /// (`_create_vocab_sentencepiece`): user-defined pieces count as
    /// normal, and the special ids come from the trainer spec.
    pub fn to_meta(&self) -> R<TokMeta> {
        if self.model_type != 2 {
            return Err(format!(
                "model_type {} (1 is unigram); cria's SentencePiece tokenizer is BPE",
                self.model_type
            ));
        }
        let n = self.pieces.len() as i64;
        let id = |x: i64| (0..n).contains(&x).then_some(x as u32);
        let mut t = TokMeta {
            model: "llama".into(),
            pre: Some("default".into()),
            scores: Some(self.pieces.iter().map(|p| p.1).collect()),
            add_space_prefix: Some(self.add_dummy_prefix),
            bos: id(self.bos_id),
            eos: id(self.eos_id),
            unk: id(self.unk_id),
            pad: id(self.pad_id),
            add_bos: Some(true),
            add_eos: Some(false),
            ..TokMeta::default()
        };
        for (p, _, ty) in &self.pieces {
            t.tokens.push(p.clone());
            t.types.push(match *ty {
                UNKNOWN | CONTROL | UNUSED | BYTE => *ty,
                _ => NORMAL,
            });
        }
        Ok(t)
    }
}

/// Encodes a model (for tests and fixtures): the inverse of [`parse`] for
/// the fields it reads.
pub fn encode(m: &SpmModel) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn bytes(out: &mut Vec<u8>, num: u64, b: &[u8]) {
        varint(out, num << 3 | 2);
        varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }
    fn int(out: &mut Vec<u8>, num: u64, v: i64) {
        varint(out, num << 3);
        varint(out, v as u64);
    }
    let mut out = Vec::new();
    for (p, s, ty) in &m.pieces {
        let mut e = Vec::new();
        bytes(&mut e, 1, p.as_bytes());
        varint(&mut e, 2 << 3 | 5);
        e.extend_from_slice(&s.to_le_bytes());
        int(&mut e, 3, i64::from(*ty));
        bytes(&mut out, 1, &e);
    }
    let mut t = Vec::new();
    int(&mut t, 3, m.model_type);
    int(&mut t, 40, m.unk_id);
    int(&mut t, 41, m.bos_id);
    int(&mut t, 42, m.eos_id);
    int(&mut t, 43, m.pad_id);
    bytes(&mut out, 2, &t);
    let mut n = Vec::new();
    int(&mut n, 3, i64::from(m.add_dummy_prefix));
    bytes(&mut out, 3, &n);
    out
}
