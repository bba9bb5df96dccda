//! A restricted pickle reader for PyTorch state dicts.
//!
//! It understands only what `torch.save(state_dict)` writes: the opcodes
//! that build tuples, lists, dicts, strings and numbers, persistent ids
//! naming storages (`BINPERSID`), and REDUCE of exactly two callables:
//! `collections.OrderedDict` (no arguments) and
//! `torch._utils._rebuild_tensor_v2` (or `_rebuild_parameter` around a
//! tensor). The only other globals accepted are the storage types
//! `torch.{Float,Half,BFloat16}Storage`, as data. Nothing is ever called or
//! imported: a GLOBAL of anything else (`posix.system`, `builtins.eval`)
//! is an error when it is read, before anything could use it.
//!
//! Sizes are bounded: the memo, the stack and mark depth, every string,
//! and the total number of values made (copies through the memo count,
//! so a "billion laughs" pickle fails instead of exhausting memory).

use crate::plan::DType;
use std::collections::HashMap;

/// Why a pickle was refused.
#[derive(Debug, Clone, PartialEq)]
pub struct PickleError {
    /// Byte offset of the opcode.
    pub at: usize,
    pub detail: String,
}

impl std::fmt::Display for PickleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pickle byte {}: {}", self.at, self.detail)
    }
}

/// Memo slots, stack depth and values made, at most.
const MAX_MEMO: usize = 1 << 20;
const MAX_STACK: usize = 1 << 20;
const MAX_VALUES: usize = 1 << 24;

/// A callable the reader knows by name; never called, only matched.
#[derive(Clone, Debug, PartialEq)]
pub enum Global {
    OrderedDict,
    RebuildTensor,
    RebuildParameter,
    Storage(DType),
}

/// A storage named by a persistent id: `archive/data/{key}`.
#[derive(Clone, Debug, PartialEq)]
pub struct StorageRef {
    pub dtype: DType,
    pub key: String,
    /// Elements the pickle says the storage holds.
    pub numel: u64,
}

/// A tensor: a contiguous view into a storage.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorRef {
    pub storage: StorageRef,
    /// In elements.
    pub offset: u64,
    pub shape: Vec<usize>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Obj {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Obj>),
    List(Vec<Obj>),
    Dict(Vec<(Obj, Obj)>),
    Global(Global),
    Storage(StorageRef),
    Tensor(TensorRef),
}

impl Obj {
    fn name(&self) -> String {
        match self {
            Obj::Global(g) => format!("{g:?}"),
            Obj::Str(s) => format!("the string {s:?}"),
            o => format!("{:?}", std::mem::discriminant(o)).replace("Discriminant", "value"),
        }
    }

    /// Values in this object, counted until `budget` runs out.
    fn count(&self, budget: &mut usize) -> bool {
        if *budget == 0 {
            return false;
        }
        *budget -= 1;
        match self {
            Obj::Tuple(v) | Obj::List(v) => v.iter().all(|o| o.count(budget)),
            Obj::Dict(v) => v.iter().all(|(k, o)| k.count(budget) && o.count(budget)),
            _ => true,
        }
    }
}

enum Item {
    Obj(Obj),
    Mark,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    op_at: usize,
    stack: Vec<Item>,
    memo: HashMap<u32, Obj>,
    made: usize,
}

type R<T> = std::result::Result<T, PickleError>;

/// Reads a state-dict pickle: the top object, which must be a dict of
/// tensors (nested dicts are flattened as `outer.inner`, the way some
/// checkpoints wrap their weights).
pub fn read_state_dict(buf: &[u8]) -> R<Vec<(String, TensorRef)>> {
    let top = read(buf)?;
    let mut out = Vec::new();
    flatten(&top, "", &mut out, 0)?;
    Ok(out)
}

fn flatten(o: &Obj, prefix: &str, out: &mut Vec<(String, TensorRef)>, depth: usize) -> R<()> {
    let err = |detail: String| Err(PickleError { at: 0, detail });
    let Obj::Dict(items) = o else {
        return err(format!(
            "the pickle holds {}, not a dict of tensors",
            o.name()
        ));
    };
    if depth > 4 {
        return err("dicts nested more than 4 deep".into());
    }
    for (k, v) in items {
        let Obj::Str(k) = k else {
            return err(format!("a dict key is {}, not a string", k.name()));
        };
        let name = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Obj::Tensor(t) => out.push((name, t.clone())),
            Obj::Dict(_) => flatten(v, &name, out, depth + 1)?,
            // Training state beside the weights (epochs, args) is skipped.
            Obj::Int(_) | Obj::Float(_) | Obj::Str(_) | Obj::None | Obj::Bool(_) => {}
            other => return err(format!("{name:?} is {}, not a tensor", other.name())),
        }
    }
    Ok(())
}

/// Reads one pickle and returns its top object.
pub fn read(buf: &[u8]) -> R<Obj> {
    let mut r = Reader {
        buf,
        pos: 0,
        op_at: 0,
        stack: Vec::new(),
        memo: HashMap::new(),
        made: 0,
    };
    r.run()
}

impl<'a> Reader<'a> {
    fn fail<T>(&self, detail: impl Into<String>) -> R<T> {
        Err(PickleError {
            at: self.op_at,
            detail: detail.into(),
        })
    }

    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        if n > self.buf.len() - self.pos {
            return self.fail(format!(
                "needs {n} bytes, {} left",
                self.buf.len() - self.pos
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> R<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> R<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> R<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn line(&mut self) -> R<&'a str> {
        let rest = &self.buf[self.pos..];
        let Some(n) = rest.iter().take(256).position(|&b| b == b'\n') else {
            return self.fail("a GLOBAL name without a newline in 256 bytes");
        };
        let s = std::str::from_utf8(&rest[..n])
            .or_else(|_| self.fail("a GLOBAL name that is not UTF-8"))?;
        self.pos += n + 1;
        Ok(s)
    }

    fn string(&mut self, n: usize) -> R<String> {
        let b = self.take(n)?;
        match std::str::from_utf8(b) {
            Ok(s) => Ok(s.to_string()),
            Err(_) => self.fail("a string that is not UTF-8"),
        }
    }

    fn push(&mut self, o: Obj) -> R<()> {
        if self.stack.len() >= MAX_STACK {
            return self.fail(format!("the stack passes {MAX_STACK} items"));
        }
        self.made += 1;
        if self.made > MAX_VALUES {
            return self.fail(format!("more than {MAX_VALUES} values"));
        }
        self.stack.push(Item::Obj(o));
        Ok(())
    }

    fn pop(&mut self) -> R<Obj> {
        match self.stack.pop() {
            Some(Item::Obj(o)) => Ok(o),
            Some(Item::Mark) => self.fail("a MARK where a value was expected"),
            None => self.fail("the stack is empty"),
        }
    }

    fn top(&mut self) -> R<&mut Obj> {
        match self.stack.last_mut() {
            Some(Item::Obj(o)) => Ok(o),
            _ => Err(PickleError {
                at: self.op_at,
                detail: "no value on the stack".into(),
            }),
        }
    }

    /// Everything above the last MARK, which is removed.
    fn pop_mark(&mut self) -> R<Vec<Obj>> {
        let Some(m) = self.stack.iter().rposition(|i| matches!(i, Item::Mark)) else {
            return self.fail("no MARK on the stack");
        };
        let items = self.stack.split_off(m + 1);
        self.stack.pop();
        Ok(items
            .into_iter()
            .filter_map(|i| match i {
                Item::Obj(o) => Some(o),
                Item::Mark => None,
            })
            .collect())
    }

    fn memo_put(&mut self, key: u32) -> R<()> {
        if self.memo.len() >= MAX_MEMO && !self.memo.contains_key(&key) {
            return self.fail(format!("the memo passes {MAX_MEMO} entries"));
        }
        let o = self.top()?.clone();
        let mut budget = MAX_VALUES.saturating_sub(self.made);
        if !o.count(&mut budget) {
            return self.fail(format!("more than {MAX_VALUES} values"));
        }
        self.made = MAX_VALUES - budget;
        self.memo.insert(key, o);
        Ok(())
    }

    fn memo_get(&mut self, key: u32) -> R<()> {
        let Some(o) = self.memo.get(&key).cloned() else {
            return self.fail(format!("memo entry {key} was never stored"));
        };
        let mut budget = MAX_VALUES.saturating_sub(self.made);
        if !o.count(&mut budget) {
            return self.fail(format!("more than {MAX_VALUES} values"));
        }
        self.made = MAX_VALUES - budget;
        self.push(o)
    }

    fn global(&mut self, module: &str, name: &str) -> R<Obj> {
        let g = match (module, name) {
            ("collections", "OrderedDict") => Global::OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensor,
            ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
            ("torch", "FloatStorage") => Global::Storage(DType::F32),
            ("torch", "HalfStorage") => Global::Storage(DType::F16),
            ("torch", "BFloat16Storage") => Global::Storage(DType::BF16),
            _ => {
                return self.fail(format!(
                    "the global {module}.{name} is not allowed: a weights file only names \
                     OrderedDict, tensor rebuilds and float storages, so this pickle is refused \
                     (nothing in it was run)"
                ))
            }
        };
        Ok(Obj::Global(g))
    }

    fn run(&mut self) -> R<Obj> {
        loop {
            self.op_at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    let v = self.u8()?;
                    if v > 5 {
                        return self.fail(format!("pickle protocol {v}"));
                    }
                }
                0x95 => {
                    self.take(8)?; // FRAME: a length hint
                }
                b'.' => {
                    let top = self.pop()?;
                    return Ok(top);
                }
                b'(' => {
                    if self.stack.len() >= MAX_STACK {
                        return self.fail("too many MARKs");
                    }
                    self.stack.push(Item::Mark);
                }
                b'N' => self.push(Obj::None)?,
                0x88 => self.push(Obj::Bool(true))?,
                0x89 => self.push(Obj::Bool(false))?,
                b'K' => {
                    let v = self.u8()?;
                    self.push(Obj::Int(v.into()))?
                }
                b'M' => {
                    let v = self.u16()?;
                    self.push(Obj::Int(v.into()))?
                }
                b'J' => {
                    let v = self.u32()? as i32;
                    self.push(Obj::Int(v.into()))?
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    if n > 8 {
                        return self.fail(format!("a {n}-byte integer"));
                    }
                    let mut v = [0u8; 8];
                    v[..n].copy_from_slice(b);
                    if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                        v[n..].fill(0xff);
                    }
                    self.push(Obj::Int(i64::from_le_bytes(v)))?
                }
                b'G' => {
                    let b = self.take(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    self.push(Obj::Float(f64::from_be_bytes(a)))?
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let s = self.string(n)?;
                    self.push(Obj::Str(s))?
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let s = self.string(n)?;
                    self.push(Obj::Str(s))?
                }
                b'U' => {
                    let n = self.u8()? as usize;
                    let s = self.string(n)?;
                    self.push(Obj::Str(s))?
                }
                b'T' => {
                    let n = self.u32()? as usize;
                    let s = self.string(n)?;
                    self.push(Obj::Str(s))?
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.push(Obj::Bytes(b))?
                }
                b'B' => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.push(Obj::Bytes(b))?
                }
                b')' => self.push(Obj::Tuple(Vec::new()))?,
                b']' => self.push(Obj::List(Vec::new()))?,
                b'}' => self.push(Obj::Dict(Vec::new()))?,
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Obj::Tuple(items))?
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push(Obj::Tuple(items))?
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push(Obj::List(items))?
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    let d = self.pairs(items)?;
                    self.push(Obj::Dict(d))?
                }
                b'a' => {
                    let v = self.pop()?;
                    match self.top()? {
                        Obj::List(l) => l.push(v),
                        _ => return self.fail("APPEND to something that is not a list"),
                    }
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    match self.top()? {
                        Obj::List(l) => l.extend(items),
                        _ => return self.fail("APPENDS to something that is not a list"),
                    }
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    match self.top()? {
                        Obj::Dict(d) => d.push((k, v)),
                        _ => return self.fail("SETITEM on something that is not a dict"),
                    }
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    match self.top()? {
                        Obj::Dict(d) => d.extend(pairs),
                        _ => return self.fail("SETITEMS on something that is not a dict"),
                    }
                }
                b'q' => {
                    let k = self.u8()?;
                    self.memo_put(k.into())?
                }
                b'r' => {
                    let k = self.u32()?;
                    self.memo_put(k)?
                }
                0x94 => {
                    let k = self.memo.len() as u32;
                    self.memo_put(k)?
                }
                b'h' => {
                    let k = self.u8()?;
                    self.memo_get(k.into())?
                }
                b'j' => {
                    let k = self.u32()?;
                    self.memo_get(k)?
                }
                b'c' => {
                    let module = self.line()?.to_string();
                    let name = self.line()?.to_string();
                    let g = self.global(&module, &name)?;
                    self.push(g)?
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Obj::Str(m), Obj::Str(n)) = (&module, &name) else {
                        return self.fail("STACK_GLOBAL of values that are not strings");
                    };
                    let g = self.global(m, n)?;
                    self.push(g)?
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let s = self.persistent(pid)?;
                    self.push(Obj::Storage(s))?
                }
                b'R' => {
                    let args = self.pop()?;
                    let f = self.pop()?;
                    let o = self.reduce(f, args)?;
                    self.push(o)?
                }
                b'b' => {
                    // BUILD: only an OrderedDict's attribute state
                    // (`_metadata`), which carries no weights.
                    let _state = self.pop()?;
                    if !matches!(self.top()?, Obj::Dict(_)) {
                        return self.fail("BUILD on something that is not a dict");
                    }
                }
                b'0' => {
                    self.pop()?;
                }
                op => {
                    return self.fail(format!(
                        "opcode 0x{op:02x} ({:?}) is not used by tensor state dicts",
                        op as char
                    ))
                }
            }
        }
    }

    fn pairs(&self, items: Vec<Obj>) -> R<Vec<(Obj, Obj)>> {
        if !items.len().is_multiple_of(2) {
            return self.fail("an odd number of items for a dict");
        }
        let mut it = items.into_iter();
        let mut out = Vec::new();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            out.push((k, v));
        }
        Ok(out)
    }

    /// `('storage', StorageType, key, location, numel)`.
    fn persistent(&self, pid: Obj) -> R<StorageRef> {
        let Obj::Tuple(t) = pid else {
            return self.fail(format!(
                "a persistent id that is {}, not a tuple",
                pid.name()
            ));
        };
        match t.as_slice() {
            [Obj::Str(tag), Obj::Global(Global::Storage(dtype)), Obj::Str(key), Obj::Str(_), Obj::Int(n)]
                if tag == "storage" && *n >= 0 =>
            {
                if key.is_empty() || key.len() > 64 || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    return self.fail(format!("storage key {key:?}"));
                }
                Ok(StorageRef {
                    dtype: *dtype,
                    key: key.clone(),
                    numel: *n as u64,
                })
            }
            _ => self.fail("a persistent id that is not ('storage', FloatStorage|HalfStorage|BFloat16Storage, key, location, numel)"),
        }
    }

    fn reduce(&self, f: Obj, args: Obj) -> R<Obj> {
        let Obj::Tuple(args) = args else {
            return self.fail("REDUCE with arguments that are not a tuple");
        };
        match f {
            Obj::Global(Global::OrderedDict) if args.is_empty() => Ok(Obj::Dict(Vec::new())),
            Obj::Global(Global::RebuildTensor) => self.rebuild(args),
            Obj::Global(Global::RebuildParameter) => match args.into_iter().next() {
                Some(t @ Obj::Tensor(_)) => Ok(t),
                _ => self.fail("_rebuild_parameter of something that is not a tensor"),
            },
            f => self.fail(format!(
                "REDUCE on {} is not a tensor rebuild; this pickle is refused (nothing in it was run)",
                f.name()
            )),
        }
    }

    /// `_rebuild_tensor_v2(storage, offset, size, stride, requires_grad,
    /// backward_hooks[, metadata])`: a contiguous view inside the storage.
    fn rebuild(&self, args: Vec<Obj>) -> R<Obj> {
        let ints = |o: &Obj| -> Option<Vec<u64>> {
            match o {
                Obj::Tuple(v) => v
                    .iter()
                    .map(|x| match x {
                        Obj::Int(i) if *i >= 0 => Some(*i as u64),
                        _ => None,
                    })
                    .collect(),
                _ => None,
            }
        };
        let (Some(Obj::Storage(s)), Some(Obj::Int(off)), Some(size), Some(stride)) = (
            args.first(),
            args.get(1),
            args.get(2).and_then(ints),
            args.get(3).and_then(ints),
        ) else {
            return self.fail("_rebuild_tensor_v2 with arguments that are not (storage, offset, size, stride, ...)");
        };
        if *off < 0 || size.len() != stride.len() || size.len() > 4 {
            return self.fail(format!(
                "a tensor of size {size:?}, stride {stride:?}, offset {off}"
            ));
        }
        // Row-major contiguous: stride[i] = product of size[i+1..].
        let mut want = 1u64;
        for i in (0..size.len()).rev() {
            if size[i] != 1 && stride[i] != want {
                return self.fail(format!(
                    "a non-contiguous tensor (size {size:?}, stride {stride:?}); save it with .contiguous()"
                ));
            }
            want = match want.checked_mul(size[i]) {
                Some(w) => w,
                None => return self.fail(format!("size {size:?} overflows")),
            };
        }
        let end = (*off as u64).checked_add(want);
        if end.is_none_or(|e| e > s.numel) {
            return self.fail(format!(
                "a tensor of size {size:?} at offset {off} needs {} elements but its storage {:?} holds {}",
                end.unwrap_or(u64::MAX),
                s.key,
                s.numel
            ));
        }
        Ok(Obj::Tensor(TensorRef {
            storage: s.clone(),
            offset: *off as u64,
            shape: size.iter().map(|&d| d as usize).collect(),
        }))
    }
}
