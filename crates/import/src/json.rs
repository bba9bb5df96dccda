//! JSON files of checkpoints (config.json, params.json, tokenizer files):
//! size-bounded reads and typed field access whose errors name the file,
//! the key and the value found.

use crate::error::{Error, Result};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// Largest JSON file read (LLaMA 3's tokenizer.json is 9 MB).
pub const MAX_JSON: u64 = 256 << 20;

/// A JSON object and the file it came from.
#[derive(Clone)]
pub struct Obj {
    pub path: PathBuf,
    pub map: Map<String, Value>,
}

pub fn read_value(path: &Path) -> Result<Value> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.len() > MAX_JSON {
        return Err(Error::bad(
            path,
            format!("{} bytes; JSON files are read up to {MAX_JSON}", meta.len()),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::bad(path, format!("not valid JSON: {e}")))
}

pub fn read_object(path: &Path) -> Result<Obj> {
    match read_value(path)? {
        Value::Object(map) => Ok(Obj {
            path: path.to_path_buf(),
            map,
        }),
        other => Err(Error::bad(
            path,
            format!("expected a JSON object, found {}", kind(&other)),
        )),
    }
}

pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Obj {
    pub fn new(path: &Path, map: Map<String, Value>) -> Obj {
        Obj {
            path: path.to_path_buf(),
            map,
        }
    }

    fn wrong(&self, key: &str, want: &str, v: &Value) -> Error {
        let shown: String = v.to_string().chars().take(80).collect();
        Error::bad(
            &self.path,
            format!("{key:?} should be {want}, found {shown}"),
        )
    }

    fn missing(&self, key: &str) -> Error {
        Error::bad(&self.path, format!("{key:?} is missing"))
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.map.iter()
    }

    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if n <= u32::MAX as u64 => Ok(Some(n as usize)),
                _ => Err(self.wrong(key, "a non-negative integer below 2^32", v)),
            },
        }
    }

    pub fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?.ok_or_else(|| self.missing(key))
    }

    pub fn opt_i64(&self, key: &str) -> Result<Option<i64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "an integer", v)),
        }
    }

    pub fn opt_f32(&self, key: &str) -> Result<Option<f32>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() => Ok(Some(x as f32)),
                _ => Err(self.wrong(key, "a finite number", v)),
            },
        }
    }

    pub fn f32(&self, key: &str) -> Result<f32> {
        self.opt_f32(key)?.ok_or_else(|| self.missing(key))
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "true or false", v)),
        }
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(self.wrong(key, "a string", v)),
        }
    }

    pub fn str(&self, key: &str) -> Result<String> {
        self.opt_str(key)?.ok_or_else(|| self.missing(key))
    }

    /// A list of strings; absent is empty.
    pub fn str_list(&self, key: &str) -> Result<Vec<String>> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| self.wrong(key, "a list of strings", x))
                })
                .collect(),
            Some(v) => Err(self.wrong(key, "a list of strings", v)),
        }
    }

    pub fn opt_obj(&self, key: &str) -> Result<Option<Obj>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(Obj::new(&self.path, m.clone()))),
            Some(v) => Err(self.wrong(key, "an object", v)),
        }
    }

    pub fn obj(&self, key: &str) -> Result<Obj> {
        self.opt_obj(key)?.ok_or_else(|| self.missing(key))
    }
}
