//! LoRA adapters in the server, in llama-server's shape.
//!
//! The adapters of `--lora` / `--lora-scaled` are loaded at start, with ids
//! 0, 1, ... in that order. `GET /lora-adapters` lists them
//! (`[{"id", "path", "scale", "task_name", "prompt_prefix"}]`); `POST
//! /lora-adapters` with `[{"id": 0, "scale": 0.5}]` sets the scales used by
//! requests that name none (an adapter not in the list gets scale 0, as
//! in llama-server) and answers `{"success": true}`. A completion or chat
//! request may carry its own `"lora": [{"id": 0, "scale": 0.8}]` (again,
//! unlisted adapters are off). Unlike llama-server, an unknown id or a
//! scale that is not a finite number is a 400, not ignored. The engine gets
//! each request's adapters resolved to a [`LoraSet`], so requests with
//! different adapters decode in the same batch.

use crate::error::ApiError;
use cria_model::{Adapter, LoraSet};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

/// Entries of one `lora` list at most (ids may repeat; the last wins).
const MAX_ENTRIES: usize = 256;

pub struct Adapters {
    list: Vec<(String, Arc<Adapter>)>,
    /// The scales of requests without their own `lora`.
    scales: Mutex<Vec<f32>>,
}

#[derive(Deserialize)]
struct Entry {
    id: serde_json::Number,
    scale: serde_json::Number,
}

#[derive(Deserialize)]
struct Field {
    #[serde(default)]
    lora: Option<Vec<Entry>>,
}

impl Adapters {
    /// Adapters with their start scales: (path as given, adapter, scale).
    pub fn new(list: Vec<(String, Arc<Adapter>, f32)>) -> Adapters {
        let scales = list.iter().map(|(_, _, s)| *s).collect();
        Adapters {
            list: list.into_iter().map(|(p, a, _)| (p, a)).collect(),
            scales: Mutex::new(scales),
        }
    }

    fn current(&self) -> Vec<f32> {
        self.scales.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// `GET /lora-adapters`.
    pub fn listing(&self) -> Value {
        let scales = self.current();
        Value::Array(
            self.list
                .iter()
                .zip(scales)
                .enumerate()
                .map(|(id, ((path, _), scale))| {
                    json!({"id": id, "path": path, "scale": scale,
                           "task_name": "", "prompt_prefix": ""})
                })
                .collect(),
        )
    }

    /// Scales for every adapter from a list of entries (unlisted: 0).
    fn scales_of(&self, entries: &[Entry], param: &str) -> Result<Vec<f32>, ApiError> {
        if entries.len() > MAX_ENTRIES {
            return Err(ApiError::invalid(
                param,
                format!("{} entries; at most {MAX_ENTRIES}", entries.len()),
            ));
        }
        let mut scales = vec![0.0; self.list.len()];
        for e in entries {
            let id =
                e.id.as_u64()
                    .filter(|&i| (i as usize) < self.list.len())
                    .ok_or_else(|| {
                        ApiError::invalid(
                            param,
                            format!(
                                "no adapter with id {} (the server has {}: see GET /lora-adapters)",
                                e.id,
                                self.list.len()
                            ),
                        )
                    })?;
            let scale = e
                .scale
                .as_f64()
                .map(|s| s as f32)
                .filter(|s| s.is_finite())
                .ok_or_else(|| {
                    ApiError::invalid(param, format!("scale {} is not a finite number", e.scale))
                })?;
            scales[id as usize] = scale;
        }
        Ok(scales)
    }

    /// `POST /lora-adapters`: the body is an array of `{"id", "scale"}`.
    pub fn set(&self, body: &[u8]) -> Result<Value, ApiError> {
        let entries: Vec<Entry> = serde_json::from_slice(body).map_err(|e| {
            ApiError::invalid(
                "body",
                format!("the body must be an array of {{\"id\", \"scale\"}} objects: {e}"),
            )
        })?;
        let scales = self.scales_of(&entries, "lora")?;
        if let Ok(mut s) = self.scales.lock() {
            *s = scales;
        }
        Ok(json!({"success": true}))
    }

    /// The adapters of a request body: its `lora` field, else the current
    /// scales. Adapters at scale 0 are left out (they add nothing).
    pub fn for_request(&self, body: &[u8]) -> Result<LoraSet, ApiError> {
        let field: Field = crate::openai::parse(body)?;
        let scales = match &field.lora {
            Some(entries) => self.scales_of(entries, "lora")?,
            None => self.current(),
        };
        Ok(self
            .list
            .iter()
            .zip(scales)
            .filter(|(_, s)| *s != 0.0)
            .map(|((_, a), s)| (a.clone(), s))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adapters(n: usize) -> Adapters {
        let a = |i: usize| {
            Arc::new(Adapter {
                name: format!("a{i}"),
                alpha: 0.0,
                layers: Vec::new(),
                output: None,
            })
        };
        Adapters::new((0..n).map(|i| (format!("a{i}.gguf"), a(i), 1.0)).collect())
    }

    #[test]
    fn request_lists_override_and_unlisted_adapters_are_off() {
        let a = adapters(2);
        assert_eq!(a.for_request(b"{}").unwrap().len(), 2);
        let set = a
            .for_request(br#"{"lora": [{"id": 1, "scale": 0.5}]}"#)
            .unwrap();
        assert_eq!(set.len(), 1);
        assert_eq!((set[0].0.name.as_str(), set[0].1), ("a1", 0.5));
        assert!(a.for_request(br#"{"lora": []}"#).unwrap().is_empty());
    }

    #[test]
    fn post_sets_the_default_scales() {
        let a = adapters(2);
        assert_eq!(
            a.set(br#"[{"id": 0, "scale": 0.25}]"#).unwrap(),
            json!({"success": true})
        );
        let l = a.listing();
        assert_eq!(l[0]["scale"], json!(0.25));
        assert_eq!(l[1]["scale"], json!(0.0));
        assert_eq!(a.for_request(b"{}").unwrap().len(), 1);
    }

    #[test]
    fn bad_ids_and_scales_are_400() {
        let a = adapters(1);
        for body in [
            r#"{"lora": [{"id": 1, "scale": 1}]}"#,
            r#"{"lora": [{"id": -1, "scale": 1}]}"#,
            r#"{"lora": [{"id": 0, "scale": 1e400}]}"#,
            r#"{"lora": [{"id": 0}]}"#,
            r#"{"lora": {"id": 0, "scale": 1}}"#,
        ] {
            let e = a.for_request(body.as_bytes()).unwrap_err();
            assert_eq!(e.status.as_u16(), 400, "{body}");
        }
        assert!(a.set(br#"{"id": 0, "scale": 1}"#).is_err());
    }
}
