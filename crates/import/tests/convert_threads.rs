//! `cria convert` on several threads writes the same bytes as on one,
//! reading the source with O_DIRECT or through the map, and those bytes
//! are each tensor converted serially, element by element (whole-tensor
//! `quantize_row`), from its source bytes in GGUF order.
//!
//! The folder is the llama2 family fixture (2 layers, a 32000 x 128
//! embedding of 4 Mi elements: 16 pool tasks; q/k rows to un-permute),
//! its weights stored as F32, F16 and BF16, with NaN, infinities and
//! subnormals planted in the embedding.

mod common;

use cria_gguf::{GgmlType, GgufFile};
use cria_import::{convert_with, convert_with_io, Io, OutType};
use std::path::Path;

/// The llama2 fixture folder with its weights stored as `dtype`.
fn folder(dir: &Path, dtype: &str) {
    common::write_family_folder("llama2", dir);
    let mut w = common::family_weights("llama2");
    let specials = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        1e-40,
        -3e-42,
        0.0,
        -0.0,
        65_504.0,
        1e30,
    ];
    let embd = &mut w[0].2;
    for (k, &x) in specials.iter().enumerate() {
        // Spread over several tasks and Q8_0 blocks.
        embd[k * 470_001 + 5] = x;
    }
    common::write_safetensors_as(&dir.join("model.safetensors"), &w, dtype);
}

/// Each tensor of `plan` converted the slow, obvious way.
fn reference(dir: &Path, outtype: OutType) -> Vec<(String, GgmlType, Vec<u8>)> {
    let plan = cria_import::plan(dir, outtype).unwrap();
    plan.tensors
        .iter()
        .map(|t| {
            let ty = outtype.for_tensor(t);
            let raw = t.raw().unwrap().into_owned();
            let bytes = if ty == t.dtype().ggml() {
                raw
            } else {
                let x = cria_import::to_f32(t.dtype(), &raw);
                let mut out = vec![0u8; cria_kernels::row_bytes(ty, x.len()).unwrap()];
                cria_kernels::quantize_row(ty, &x, None, &mut out).unwrap();
                out
            };
            (t.name.clone(), ty, bytes)
        })
        .collect()
}

/// A scratch folder in memory where there is one: each conversion ends in
/// an fsync, which on a busy shared disk costs seconds, not milliseconds.
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    match shm.is_dir() {
        true => tempfile::tempdir_in(shm).unwrap_or_else(|_| tempfile::tempdir().unwrap()),
        false => tempfile::tempdir().unwrap(),
    }
}

#[test]
fn convert_bytes_do_not_depend_on_threads_and_match_serial_conversion() {
    let tmp = scratch();
    for dtype in ["F32", "F16", "BF16"] {
        let dir = tmp.path().join(dtype);
        folder(&dir, dtype);
        for (name, outtype) in [
            ("f32", OutType::F32),
            ("f16", OutType::F16),
            ("bf16", OutType::BF16),
            ("q8_0", OutType::Q8_0),
        ] {
            let what = format!("{dtype} -> {name}");
            let mut first: Option<Vec<u8>> = None;
            // Direct I/O (O_DIRECT reads into pooled buffers and staged
            // writes, where the file system allows it) and the page cache
            // (the map, buffered writes): the same bytes.
            let runs = [(1, Io::Direct), (3, Io::Direct), (3, Io::PageCache)];
            for (threads, io) in runs {
                let what = format!("{what} ({io:?})");
                let out = tmp.path().join(format!("{dtype}.{name}.{threads}.gguf"));
                let mut calls = Vec::new();
                let mut progress = |d, t| calls.push((d, t));
                convert_with_io(&dir, &out, outtype, threads, io, &mut progress).unwrap();
                let n = calls.len();
                assert!(n > 20, "{what}: progress after each tensor ({n} calls)");
                assert_eq!(calls, (1..=n).map(|d| (d, n)).collect::<Vec<_>>(), "{what}");
                assert!(!tmp
                    .path()
                    .join(format!("{dtype}.{name}.{threads}.gguf.part"))
                    .exists());
                let bytes = std::fs::read(&out).unwrap();
                std::fs::remove_file(&out).unwrap();
                match &first {
                    None => {
                        let file = GgufFile::from_bytes(bytes.clone()).unwrap();
                        let want = reference(&dir, outtype);
                        assert_eq!(file.tensors().len(), want.len(), "{what}");
                        for (tname, ty, data) in &want {
                            let t = file.tensor(tname).unwrap();
                            assert_eq!(t.ty, *ty, "{what}: {tname}");
                            assert!(
                                file.tensor_data(t) == &data[..],
                                "{what}: {tname} differs from the serial conversion"
                            );
                        }
                        first = Some(bytes);
                    }
                    Some(one) => assert!(
                        &bytes == one,
                        "{what}: {threads} threads wrote other bytes than 1 thread"
                    ),
                }
            }
        }
    }
}

#[test]
fn zero_threads_is_an_error_and_writes_nothing() {
    let tmp = scratch();
    let dir = tmp.path().join("hf");
    folder(&dir, "BF16");
    let out = tmp.path().join("out.gguf");
    let e = convert_with(&dir, &out, OutType::F16, 0, &mut |_, _| {}).unwrap_err();
    assert!(e.to_string().contains("at least 1 thread"), "{e}");
    assert!(!out.exists() && !tmp.path().join("out.gguf.part").exists());
}
