//! Writes one of the family fixtures (tests/fixtures/import/families) as a
//! complete Hugging Face folder, weights included, exactly as the tests
//! write it: for checks outside CI (scripts/check-families-llamacpp.sh).
//!
//!     cargo run --release -p cria-import --example family_folder -- llama3.1 /tmp/f/llama3.1
//!
//! NAME `default` writes the default model (SmolLM2-135M-Instruct, its
//! weights dequantized to F32 in two shards) as the tests do, for
//! checking `cria convert` on a real model's folder.

#[path = "../tests/common/mod.rs"]
mod common;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, name, out] = args.as_slice() else {
        return Err("usage: family_folder NAME OUT_DIR (NAME: a folder of \
                    tests/fixtures/import/families, or `default`)"
            .into());
    };
    if name == "default" {
        let Some(model) = common::default_model() else {
            return Err("the default model is not cached: run `cria pull` first".into());
        };
        let src = cria_gguf::GgufFile::open(&model)?;
        common::write_hf_folder(&src, std::path::Path::new(out));
        return Ok(());
    }
    if !common::families_dir()
        .join(name)
        .join("weights.json")
        .is_file()
    {
        return Err(format!("no family {name:?} in {}", common::families_dir().display()).into());
    }
    common::write_family_folder(name, std::path::Path::new(out));
    Ok(())
}
