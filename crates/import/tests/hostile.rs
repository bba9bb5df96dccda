//! Hostile checkpoints are refused with an error, without running anything
//! and without panicking: pickles naming `os.system`, REDUCE on anything
//! but a tensor rebuild, storages shorter than their tensors claim, a zip
//! bomb, and random bytes (property test).

mod common;

use common::pk;
use proptest::prelude::*;
use std::io::Write;

fn pth_error(pickle: &[u8], storages: &[(String, Vec<u8>)]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("consolidated.00.pth");
    common::write_pth(&path, pickle, storages);
    match cria_import::pth::read(&path) {
        Ok(_) => panic!("a hostile .pth was accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_global_of_os_system_is_refused_when_read() {
    // pickle.dumps of os.system("touch /tmp/pwned") on Linux (posix.system),
    // protocol 2: GLOBAL, BINUNICODE, TUPLE1, REDUCE, STOP.
    let mut p = vec![0x80, 2];
    pk::global(&mut p, "posix", "system");
    pk::str(&mut p, "touch /tmp/cria-pwned");
    p.extend_from_slice(&[0x85, b'R', b'.']);
    let e = cria_import::pickle::read(&p).unwrap_err();
    assert!(
        e.detail.contains("posix.system") && e.detail.contains("not allowed"),
        "{e}"
    );
    assert_eq!(e.at, 2, "refused at the GLOBAL itself, before any REDUCE");
    assert!(!std::path::Path::new("/tmp/cria-pwned").exists());
    // The same inside a real .pth archive.
    let e = pth_error(&p, &[]);
    assert!(e.contains("posix.system"), "{e}");
    // STACK_GLOBAL spelling, and builtins.eval.
    let mut p = vec![0x80, 4];
    pk::str(&mut p, "builtins");
    pk::str(&mut p, "eval");
    p.push(0x93);
    let e = cria_import::pickle::read(&p).unwrap_err();
    assert!(e.detail.contains("builtins.eval"), "{e}");
}

#[test]
fn reduce_on_anything_but_a_tensor_rebuild_is_refused() {
    // torch.FloatStorage(...) called: a storage type is data, not a callable.
    let mut p = vec![0x80, 2];
    pk::global(&mut p, "torch", "FloatStorage");
    pk::ints(&mut p, &[10]);
    p.extend_from_slice(b"R.");
    let e = cria_import::pickle::read(&p).unwrap_err();
    assert!(e.detail.contains("not a tensor rebuild"), "{e}");
    // OrderedDict with arguments (its items could be anything).
    let mut p = vec![0x80, 2];
    pk::global(&mut p, "collections", "OrderedDict");
    pk::ints(&mut p, &[1, 2]);
    p.extend_from_slice(b"R.");
    assert!(cria_import::pickle::read(&p)
        .unwrap_err()
        .detail
        .contains("not a tensor rebuild"));
    // A string "called".
    let mut p = vec![0x80, 2];
    pk::str(&mut p, "os.system");
    p.extend_from_slice(b")R.");
    assert!(cria_import::pickle::read(&p)
        .unwrap_err()
        .detail
        .contains("not a tensor rebuild"));
}

#[test]
fn lying_storage_sizes_are_refused() {
    // A 4x4 tensor over a storage the pickle says has 8 elements.
    let items = [("w".to_string(), "0".to_string(), 8, vec![4, 4])];
    let e = pth_error(&pk::state_dict(&items), &[("0".into(), vec![0u8; 32])]);
    assert!(
        e.contains("needs 16 elements") && e.contains("holds 8"),
        "{e}"
    );
    // The pickle claims 16 elements, the zip entry has 8 elements' bytes.
    let items = [("w".to_string(), "0".to_string(), 16, vec![4, 4])];
    let e = pth_error(&pk::state_dict(&items), &[("0".into(), vec![0u8; 32])]);
    assert!(e.contains("holds 32 bytes"), "{e}");
    // A view past the end through its offset.
    let mut p = vec![0x80, 2, b'}', b'('];
    pk::tensor(&mut p, "w", "FloatStorage", "0", 16, 8, &[4, 4]);
    p.extend_from_slice(b"u.");
    let e = pth_error(&p, &[("0".into(), vec![0u8; 64])]);
    assert!(e.contains("needs 24 elements"), "{e}");
    // A storage key that is a path.
    let mut p = vec![0x80, 2, b'}', b'('];
    pk::tensor(&mut p, "w", "FloatStorage", "../../etc/passwd", 1, 0, &[1]);
    p.extend_from_slice(b"u.");
    assert!(cria_import::pickle::read(&p)
        .unwrap_err()
        .detail
        .contains("storage key"));
}

#[test]
fn a_zip_bomb_is_refused() {
    // data.pkl deflated from 80 MiB of zeros (80 KiB on disk): the reader
    // stops at its 64 MiB bound instead of inflating it all.
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("consolidated.00.pth");
    let f = std::fs::File::create(&path).unwrap();
    let mut z = zip::ZipWriter::new(f);
    let opt = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(true);
    z.start_file("archive/data.pkl", opt).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..80 {
        z.write_all(&zeros).unwrap();
    }
    z.finish().unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() < 1 << 20);
    let e = cria_import::pth::read(&path).err().unwrap().to_string();
    assert!(e.contains("zip bomb"), "{e}");
}

#[test]
fn a_billion_laughs_pickle_is_bounded() {
    // memo[0] = [s]*10, memo[1] = [memo[0]]*10, ... doubling by ten: each
    // level's copies count against the value budget.
    let mut p = vec![0x80, 2];
    pk::str(&mut p, "lol");
    p.extend_from_slice(&[b'q', 0]);
    for level in 0..12u8 {
        p.push(b'(');
        for _ in 0..10 {
            p.extend_from_slice(&[b'h', level]);
        }
        p.extend_from_slice(&[b'l', b'q', level + 1]);
    }
    p.push(b'.');
    let e = cria_import::pickle::read(&p).unwrap_err();
    assert!(e.detail.contains("values"), "{e}");
}

#[test]
fn a_valid_state_dict_reads() {
    let items = [("w".to_string(), "0".to_string(), 16, vec![4, 4])];
    let d = cria_import::pickle::read_state_dict(&pk::state_dict(&items)).unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].0, "w");
    assert_eq!(d[0].1.shape, vec![4, 4]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn random_pickles_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = cria_import::pickle::read(&bytes);
    }

    #[test]
    fn mutated_state_dicts_never_panic(pos in 0usize..400, byte in any::<u8>()) {
        let items = [("w".to_string(), "0".to_string(), 16, vec![4, 4]), ("b".to_string(), "1".to_string(), 4, vec![4])];
        let mut p = pk::state_dict(&items);
        let i = pos % p.len();
        p[i] = byte;
        let _ = cria_import::pickle::read_state_dict(&p);
    }

    #[test]
    fn random_tokenizer_models_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = cria_import::spm_model::parse(&bytes);
        let _ = cria_import::tiktoken::parse(&String::from_utf8_lossy(&bytes));
    }
}
