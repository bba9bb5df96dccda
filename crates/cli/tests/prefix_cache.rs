//! The prefix cache on disk (issue 14, item 4): a prompt restored from it
//! generates byte for byte what the same prompt evaluated cold does, for
//! every KV cache type; an entry that is damaged or made for something
//! else (another model, cache type or tenant) is ignored, deleted and
//! written again, and the output is still the cold one; tenants never
//! share entries; processes share a directory; `cria run --prompt-cache
//! FILE` works as llama.cpp's.

mod common;

use common::{cria, default_model, stderr, stdout};
use cria_engine::{
    Done, Engine, EngineConfig, GenerateParams, Loaded, PrefixCacheConfig, PrefixStore,
};
use cria_model::{KvType, KvTypes, Model};
use cria_prefix_cache::entry::{self, Limits};
use cria_prefix_cache::{chain_key, ident, tenant_salt, Key, ModelId, ANONYMOUS, BLOCK};
use cria_sampler::SamplerConfig;
use cria_tokenizer::Tokenizer;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

struct Fixture {
    model: Arc<Model>,
    tok: Arc<Tokenizer>,
    /// 600 tokens: two whole blocks and a tail.
    prompt: Vec<u32>,
}

fn fixture() -> Fixture {
    let loaded = Loaded::open(&default_model()).unwrap();
    let text = std::fs::read_to_string("/usr/share/common-licenses/GPL-3")
        .unwrap_or_else(|_| "The quick brown fox jumps over the lazy dog. ".repeat(120));
    let mut prompt = loaded.tokenizer.encode(&text, true, false).unwrap();
    prompt.truncate(600);
    assert_eq!(prompt.len(), 600);
    Fixture {
        model: Arc::new(loaded.model),
        tok: Arc::new(loaded.tokenizer),
        prompt,
    }
}

const N_CTX: usize = 1024;

impl Fixture {
    fn engine(&self, kv: KvTypes, cache: Option<PrefixCacheConfig>) -> Engine {
        let config = EngineConfig {
            prefix_cache: cache,
            ..EngineConfig::single(N_CTX, kv, 2)
        };
        Engine::start(self.model.clone(), self.tok.clone(), config).unwrap()
    }

    /// A seeded, sampled (not greedy) answer of 24 tokens.
    fn generate(&self, engine: &Engine, prompt: &[u32], tenant: u32) -> (String, Done) {
        let params = GenerateParams {
            max_tokens: Some(24),
            stop: vec![],
            ignore_eos: true,
            constraint: None,
            sampler: SamplerConfig {
                temperature: 0.8,
                seed: 1234,
                ..SamplerConfig::default()
            },
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let req = cria_engine::Request {
            tenant,
            ..cria_engine::Request::new(prompt.to_vec(), params, tx)
        };
        engine.submit(req).map_err(|e| format!("{e:?}")).unwrap();
        let mut text = String::new();
        loop {
            match rx.blocking_recv().expect("event") {
                cria_engine::Event::Token(t) => text.push_str(&t.text),
                cria_engine::Event::Done(d) => {
                    text.push_str(&d.text);
                    return (text, d);
                }
                cria_engine::Event::Error(e) => panic!("{e}"),
                cria_engine::Event::Embedding(_) | cria_engine::Event::Progress(_) => {
                    unreachable!()
                }
            }
        }
    }

    /// The answer with no cache of any kind (a fresh engine).
    fn cold(&self, kv: KvTypes, prompt: &[u32]) -> String {
        let e = self.engine(kv, None);
        let (text, d) = self.generate(&e, prompt, 0);
        assert_eq!(d.cached_tokens, 0);
        text
    }

    /// One run of a fresh engine on `dir` (a process lifetime: its writes
    /// are finished when it returns).
    fn run_dir(
        &self,
        kv: KvTypes,
        cache: PrefixCacheConfig,
        prompt: &[u32],
        tenant: u32,
    ) -> (String, Done, u64) {
        let e = self.engine(kv, Some(cache));
        let (text, d) = self.generate(&e, prompt, tenant);
        let rejected = e.stats().prefix_rejected.load(Ordering::Relaxed);
        e.shutdown();
        (text, d, rejected)
    }

    /// The file of block `j` of `prompt` in `dir` for `kv` and `salt`.
    fn block_path(&self, dir: &Path, kv: KvTypes, salt: &Key, prompt: &[u32], j: usize) -> PathBuf {
        let id = ident(&ModelId::of(&self.model), kv, BLOCK, salt);
        let mut key = id;
        for i in 1..=j {
            key = chain_key(&key, &prompt[(i - 1) * BLOCK..i * BLOCK]);
        }
        dir.join(format!("{j:06}-{}.kv", cria_prefix_cache::ident::hex(&key)))
    }
}

fn dir_cache(dir: &Path) -> PrefixCacheConfig {
    PrefixCacheConfig::anonymous(PrefixStore::Dir {
        path: dir.to_path_buf(),
        max_bytes: 1 << 30,
    })
}

#[test]
fn restored_prefixes_generate_what_cold_prompts_do() {
    let f = fixture();
    // A prompt sharing only the first block, and one sharing 300 tokens.
    let mut other = f.prompt[..300].to_vec();
    other.extend(f.prompt[300..500].iter().rev());
    for t in KvType::ALL {
        let kv = KvTypes::from(t);
        let dir = tempfile::tempdir().unwrap();
        let cold = f.cold(kv, &f.prompt);
        let (first, d, _) = f.run_dir(kv, dir_cache(dir.path()), &f.prompt, 0);
        assert_eq!((first.as_str(), d.cached_tokens), (cold.as_str(), 0), "{t}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2, "{t}");
        // "After a restart": a new engine finds both blocks.
        let (warm, d, _) = f.run_dir(kv, dir_cache(dir.path()), &f.prompt, 0);
        assert_eq!((d.cached_tokens, d.restored_tokens), (512, 512), "{t}");
        assert_eq!(warm, cold, "{t}: restored output differs from cold");
        // A prefix of the prefix: the first block only.
        let cold_other = f.cold(kv, &other);
        let (warm_other, d, _) = f.run_dir(kv, dir_cache(dir.path()), &other, 0);
        assert_eq!(d.restored_tokens, 256, "{t}");
        assert_eq!(warm_other, cold_other, "{t}");
    }
}

/// What a test does to an entry file before a run.
enum Damage {
    Flip(usize),
    FlipLast,
    Truncate(usize),
    Empty,
    Garbage,
    /// The entry of another ident (another model), under this name.
    OtherIdent,
    /// The same prompt's entry for another KV cache type, under this name.
    OtherType(PathBuf),
    /// Another tenant's entry for this prompt, under this name.
    OtherTenant(PathBuf),
}

#[test]
fn damaged_or_foreign_entries_are_never_used() {
    let f = fixture();
    let kv = KvTypes::from(KvType::F16);
    let cold = f.cold(kv, &f.prompt);
    let dir = tempfile::tempdir().unwrap();
    let path = |j| f.block_path(dir.path(), kv, &ANONYMOUS, &f.prompt, j);
    // Pristine entries, and foreign ones made beside them.
    f.run_dir(kv, dir_cache(dir.path()), &f.prompt, 0);
    let pristine = [1, 2].map(|j| std::fs::read(path(j)).unwrap());
    let q8 = KvTypes::from(KvType::Q8_0);
    f.run_dir(q8, dir_cache(dir.path()), &f.prompt, 0);
    let q8_block = f.block_path(dir.path(), q8, &ANONYMOUS, &f.prompt, 1);
    let salt = tenant_salt("other-key");
    let tenants = PrefixCacheConfig::for_keys(
        PrefixStore::Dir {
            path: dir.path().to_path_buf(),
            max_bytes: 1 << 30,
        },
        &["other-key".to_string()],
    );
    f.run_dir(kv, tenants, &f.prompt, 1);
    let tenant_block = f.block_path(dir.path(), kv, &salt, &f.prompt, 1);
    assert!(q8_block.exists() && tenant_block.exists());

    let n = pristine[0].len();
    let cases = [
        (1, Damage::Flip(3)),
        (1, Damage::Flip(120)),
        (1, Damage::Flip(entry::HEADER_BYTES + 10)),
        (2, Damage::FlipLast),
        (1, Damage::Truncate(n - 1)),
        (2, Damage::Truncate(100)),
        (1, Damage::Empty),
        (2, Damage::Garbage),
        (1, Damage::OtherIdent),
        (1, Damage::OtherType(q8_block.clone())),
        (1, Damage::OtherTenant(tenant_block.clone())),
    ];
    for (j, damage) in cases {
        for (i, p) in pristine.iter().enumerate() {
            std::fs::write(path(i + 1), p).unwrap();
        }
        let mut bytes = pristine[j - 1].clone();
        match &damage {
            Damage::Flip(at) => bytes[*at] ^= 0x40,
            Damage::FlipLast => *bytes.last_mut().unwrap() ^= 1,
            Damage::Truncate(len) => bytes.truncate(*len),
            Damage::Empty => bytes.clear(),
            Damage::Garbage => bytes = (0..n).map(|i| (i * 131 % 256) as u8).collect(),
            Damage::OtherIdent => {
                let e = entry::parse(&bytes, &Limits::default()).unwrap();
                let meta = entry::Meta {
                    ident: [9; 32],
                    ..e.meta.clone()
                };
                bytes = entry::encode(&meta, &e.tokens, e.payload).1;
            }
            Damage::OtherType(p) | Damage::OtherTenant(p) => bytes = std::fs::read(p).unwrap(),
        }
        std::fs::write(path(j), &bytes).unwrap();
        let (text, d, rejected) = f.run_dir(kv, dir_cache(dir.path()), &f.prompt, 0);
        let case = format!("block {j}, {}", describe(&damage));
        assert_eq!(text, cold, "{case}: output differs from cold");
        assert_eq!(d.restored_tokens, (j - 1) * BLOCK, "{case}");
        assert_eq!(rejected, 1, "{case}");
        // Deleted and written again, bit for bit what was there first.
        let again = std::fs::read(path(j)).unwrap();
        assert!(again == pristine[j - 1], "{case}: not rewritten");
    }
    // Nothing else is left in the directory (no temporary files).
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 6, "{names:?}");
    assert!(names.iter().all(|n| n.ends_with(".kv")), "{names:?}");
}

fn describe(d: &Damage) -> String {
    match d {
        Damage::Flip(at) => format!("byte {at} flipped"),
        Damage::FlipLast => "last byte flipped".into(),
        Damage::Truncate(n) => format!("truncated to {n} bytes"),
        Damage::Empty => "zero-length".into(),
        Damage::Garbage => "garbage".into(),
        Damage::OtherIdent => "another model's entry".into(),
        Damage::OtherType(_) => "a q8_0 entry".into(),
        Damage::OtherTenant(_) => "another tenant's entry".into(),
    }
}

#[test]
fn tenants_never_share_entries() {
    let f = fixture();
    let kv = KvTypes::from(KvType::F16);
    let dir = tempfile::tempdir().unwrap();
    let keys = ["key-a".to_string(), "key-b".to_string()];
    let cache = |keys: &[String]| {
        PrefixCacheConfig::for_keys(
            PrefixStore::Dir {
                path: dir.path().to_path_buf(),
                max_bytes: 1 << 30,
            },
            keys,
        )
    };
    let cold = f.cold(kv, &f.prompt);
    // Tenant 1 (key-a) writes; tenant 2 (key-b) and the anonymous tenant
    // find nothing; tenant 1 finds its own.
    let (a, _, _) = f.run_dir(kv, cache(&keys), &f.prompt, 1);
    assert_eq!(a, cold);
    for tenant in [2, 0] {
        let (text, d, _) = f.run_dir(kv, cache(&keys), &f.prompt, tenant);
        assert_eq!(
            (d.restored_tokens, text.as_str()),
            (0, cold.as_str()),
            "tenant {tenant}"
        );
    }
    let (text, d, _) = f.run_dir(kv, cache(&keys), &f.prompt, 1);
    assert_eq!((d.restored_tokens, text.as_str()), (512, cold.as_str()));
    // A tenant is its key, not its place in the list: with the keys
    // reordered, key-a (now tenant 2) finds its entries and key-b (now
    // tenant 1) does not see them.
    let reordered = [keys[1].clone(), keys[0].clone()];
    let (_, d, _) = f.run_dir(kv, cache(&reordered), &f.prompt, 2);
    assert_eq!(d.restored_tokens, 512);
    let fresh = tempfile::tempdir().unwrap();
    let only_a = PrefixCacheConfig::for_keys(
        PrefixStore::Dir {
            path: fresh.path().to_path_buf(),
            max_bytes: 1 << 30,
        },
        &keys[..1],
    );
    // A tenant id the engine has no salt for is not cached at all.
    let (_, d, _) = f.run_dir(kv, only_a, &f.prompt, 5);
    assert_eq!(d.restored_tokens, 0);
    assert_eq!(std::fs::read_dir(fresh.path()).unwrap().count(), 0);
}

#[test]
fn the_byte_cap_evicts_least_recent_prefixes() {
    let f = fixture();
    let kv = KvTypes::from(KvType::Q4_0);
    let dir = tempfile::tempdir().unwrap();
    let block_bytes = f.block_path(dir.path(), kv, &ANONYMOUS, &f.prompt, 1);
    // Room for three blocks.
    let one = {
        f.run_dir(kv, dir_cache(dir.path()), &f.prompt, 0);
        std::fs::metadata(&block_bytes).unwrap().len()
    };
    std::fs::remove_dir_all(dir.path()).unwrap();
    let capped = || {
        PrefixCacheConfig::anonymous(PrefixStore::Dir {
            path: dir.path().to_path_buf(),
            max_bytes: 3 * one,
        })
    };
    let mut second = f.prompt[..256].to_vec();
    second.reverse();
    second.extend_from_slice(&f.prompt[256..]);
    f.run_dir(kv, capped(), &f.prompt, 0);
    f.run_dir(kv, capped(), &second, 0);
    // Four blocks were written into room for three: the first prompt's
    // second block (older, and deeper than its first) went.
    let total: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert_eq!(total, 3 * one);
    assert!(f
        .block_path(dir.path(), kv, &ANONYMOUS, &f.prompt, 1)
        .exists());
    assert!(!f
        .block_path(dir.path(), kv, &ANONYMOUS, &f.prompt, 2)
        .exists());
    let (_, d, _) = f.run_dir(kv, capped(), &f.prompt, 0);
    assert_eq!(d.restored_tokens, 256);
}

/// `cria run` with the default model, greedy, 16 tokens, on `prompt`.
fn run(args: &[&str], prompt: &str) -> (String, String) {
    let o = cria()
        .args([
            "run", "--raw", "--temp", "0", "-n", "16", "-t", "2", "-c", "2048", "-m",
        ])
        .arg(default_model())
        .args(args)
        .args(["-p", prompt])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    (stdout(&o), stderr(&o))
}

fn license(chars: usize) -> String {
    let t = std::fs::read_to_string("/usr/share/common-licenses/GPL-3")
        .unwrap_or_else(|_| "The quick brown fox jumps over the lazy dog. ".repeat(200));
    t.chars().take(chars).collect()
}

#[test]
fn run_prompt_cache_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("prompt.kv");
    let fs = file.to_str().unwrap();
    let p1 = license(3000);
    let p2 = format!("{}\nA different ending here.", license(2000));
    let (cold1, cold2) = (run(&[], &p1).0, run(&[], &p2).0);
    let (out, err) = run(&["--prompt-cache", fs], &p1);
    assert_eq!(out, cold1);
    assert!(err.contains("(0 cached)"), "{err}");
    let saved = std::fs::read(&file).unwrap();
    // The same prompt: everything but its last token from the file, which
    // is not written again.
    let (out, err) = run(&["--prompt-cache", fs], &p1);
    assert_eq!(out, cold1);
    assert!(err.contains(" from disk)"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), saved);
    // A prompt sharing a prefix: that much restored; read-only leaves the
    // file as it was.
    let (out, err) = run(&["--prompt-cache", fs, "--prompt-cache-ro"], &p2);
    assert_eq!(out, cold2);
    assert!(err.contains(" from disk)"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), saved);
    // Damaged: ignored (read-only: kept), then deleted and rewritten.
    let mut bad = saved.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    std::fs::write(&file, &bad).unwrap();
    let (out, err) = run(&["--prompt-cache", fs, "--prompt-cache-ro"], &p1);
    assert_eq!(out, cold1);
    assert!(
        err.contains("(0 cached)") && err.contains("ignored"),
        "{err}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), bad);
    let (out, err) = run(&["--prompt-cache", fs], &p1);
    assert_eq!(out, cold1);
    assert!(err.contains("ignored and deleted"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), saved);
    // Another cache type: ignored, and the file now holds the new one.
    let (out, err) = run(&["--prompt-cache", fs, "-ctk", "q8_0"], &p1);
    assert!(
        err.contains("(0 cached)") && err.contains("ignored"),
        "{err}"
    );
    assert_eq!(out, run(&["-ctk", "q8_0"], &p1).0);
}

#[test]
fn processes_share_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let p = license(3000);
    let cold = run(&[], &p).0;
    // Two processes write the same blocks at once; then a third reads.
    let outs: Vec<(String, String)> = std::thread::scope(|s| {
        let h: Vec<_> = (0..2)
            .map(|_| s.spawn(|| run(&["--prefix-cache", d], &p)))
            .collect();
        h.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (out, _) in &outs {
        assert_eq!(out, &cold);
    }
    let (out, err) = run(&["--prefix-cache", d], &p);
    assert_eq!(out, cold);
    assert!(err.contains(" from disk)"), "{err}");
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| n.ends_with(".kv")), "{names:?}");
    // Bad flags are one-line errors.
    let o = cria()
        .args([
            "run",
            "--prefix-cache",
            d,
            "--prefix-cache-size",
            "12Q",
            "hi",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("K, M, G or T"), "{}", stderr(&o));
    let o = cria()
        .args(["run", "--prefix-cache", d, "--prompt-cache", "x.kv", "hi"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("cannot be used with"), "{}", stderr(&o));
}

#[test]
fn a_restarted_server_restores_prefixes_per_api_key() {
    use common::server::Server;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.txt");
    std::fs::write(&keys, "key-a\nkey-b\n").unwrap();
    let cache = dir.path().join("cache");
    let flags = [
        "--api-key-file",
        keys.to_str().unwrap(),
        "--prefix-cache",
        cache.to_str().unwrap(),
        "-c",
        "2048",
        "--parallel",
        "1",
    ];
    let body = serde_json::json!({"prompt": license(3000), "max_tokens": 8, "temperature": 0});
    let ask = |s: &Server, key: &str| {
        let auth = format!("Bearer {key}");
        let r = s.post_raw(
            "/v1/completions",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body.to_string().as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let j = r.json();
        (
            j["choices"][0]["text"].as_str().unwrap().to_string(),
            j["usage"]["prompt_tokens_details"]["cached_tokens"]
                .as_u64()
                .unwrap(),
        )
    };
    let s = Server::start(&flags);
    let (cold, cached) = ask(&s, "key-a");
    assert_eq!(cached, 0);
    assert!(s.terminate().success());
    // After the restart: key-b finds nothing of key-a's; key-a finds its
    // two blocks; both answers are the cold one.
    let s = Server::start(&flags);
    assert_eq!(ask(&s, "key-b"), (cold.clone(), 0));
    assert_eq!(ask(&s, "key-a"), (cold, 512));
}
