//! Unit tests from hand-built bytes (independent of the writer), then
//! writer round trips.

use super::*;

/// Builds GGUF bytes field by field, the way the spec lays them out.
struct Raw(Vec<u8>);

impl Raw {
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        let mut r = Raw(b"GGUF".to_vec());
        r.u32(version).u64(n_tensors).u64(n_kv);
        r
    }
    fn u32(&mut self, x: u32) -> &mut Self {
        self.0.extend_from_slice(&x.to_le_bytes());
        self
    }
    fn u64(&mut self, x: u64) -> &mut Self {
        self.0.extend_from_slice(&x.to_le_bytes());
        self
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64).bytes(s.as_bytes())
    }
    fn key(&mut self, k: &str, ty: u32) -> &mut Self {
        self.str(k).u32(ty)
    }
    fn pad_to(&mut self, align: usize) -> &mut Self {
        while !self.0.len().is_multiple_of(align) {
            self.0.push(0);
        }
        self
    }
}

/// The message is one line and names where or what failed: the byte
/// offset, the key or the tensor its kind carries.
fn assert_names_its_subject(e: &crate::Error) {
    use ErrorKind::*;
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "{msg}");
    let subject = match e.kind() {
        Truncated { at, .. }
        | CountTooLarge { at, .. }
        | UnknownValueType { at, .. }
        | NestingTooDeep { at, .. }
        | InvalidUtf8 { at, .. }
        | InvalidBool { at, .. } => format!("at byte {at}"),
        BadMagic { .. } => "not a GGUF file".to_string(),
        UnsupportedVersion { version } => format!("GGUF version {version} "),
        DuplicateKey { key } | MissingKey { key } | WrongType { key, .. } => format!("{key:?}"),
        UnknownTensorType { tensor, .. }
        | BadDimensions { tensor, .. }
        | DuplicateTensor { tensor }
        | UnalignedTensor { tensor, .. }
        | TensorOutOfBounds { tensor, .. }
        | MissingTensor { tensor } => format!("tensor {tensor:?}"),
        BadAlignment { detail } | Write { detail } => detail.clone(),
        other => panic!("unexpected error kind {other:?}"),
    };
    assert!(msg.contains(&subject), "{msg:?} does not name {subject:?}");
}

fn kind(bytes: Vec<u8>) -> ErrorKind {
    match GgufFile::from_bytes(bytes) {
        Ok(_) => panic!("expected an error"),
        Err(e) => {
            assert_names_its_subject(&e);
            e.into_kind()
        }
    }
}

#[test]
fn every_value_type_v2_and_v3() {
    for version in [2, 3] {
        let mut r = Raw::header(version, 0, 15);
        r.key("u8", 0).bytes(&[200]);
        r.key("i8", 1).bytes(&[0xff]);
        r.key("u16", 2).bytes(&60000u16.to_le_bytes());
        r.key("i16", 3).bytes(&(-300i16).to_le_bytes());
        r.key("u32", 4).u32(4_000_000_000);
        r.key("i32", 5).bytes(&(-5i32).to_le_bytes());
        r.key("f32", 6).bytes(&1.5f32.to_le_bytes());
        r.key("bool", 7).bytes(&[1]);
        r.key("string", 8).str("héllo");
        r.key("u64", 10).u64(u64::MAX);
        r.key("i64", 11).bytes(&i64::MIN.to_le_bytes());
        r.key("f64", 12).bytes(&(-0.25f64).to_le_bytes());
        r.key("arr_i32", 9).u32(5).u64(3);
        for x in [1i32, -2, 3] {
            r.bytes(&x.to_le_bytes());
        }
        r.key("arr_str", 9).u32(8).u64(2).str("a").str("");
        // Nested: an array of two arrays of u8.
        r.key("nested", 9).u32(9).u64(2);
        r.u32(0).u64(2).bytes(&[1, 2]);
        r.u32(0).u64(0);
        let f = GgufFile::from_bytes(r.0).unwrap();
        let m = f.metadata();
        assert_eq!(f.version(), version);
        assert_eq!(m.len(), 15);
        assert_eq!(m.get("u8"), Some(&Value::U8(200)));
        assert_eq!(m.get("i8"), Some(&Value::I8(-1)));
        assert_eq!(m.get("u16"), Some(&Value::U16(60000)));
        assert_eq!(m.get("i16"), Some(&Value::I16(-300)));
        assert_eq!(m.get_u32("u32").unwrap(), 4_000_000_000);
        assert_eq!(m.get_i32("i32").unwrap(), -5);
        assert_eq!(m.get_f32("f32").unwrap(), 1.5);
        assert!(m.get_bool("bool").unwrap());
        assert_eq!(m.get_str("string").unwrap(), "héllo");
        assert_eq!(m.get_u64("u64").unwrap(), u64::MAX);
        assert_eq!(m.get("i64"), Some(&Value::I64(i64::MIN)));
        assert_eq!(m.get("f64"), Some(&Value::F64(-0.25)));
        assert_eq!(m.get_i32_array("arr_i32").unwrap(), &[1, -2, 3]);
        assert_eq!(
            m.get_str_array("arr_str").unwrap(),
            &["a".to_string(), String::new()]
        );
        assert_eq!(
            m.get_array("nested").unwrap(),
            &Array::Array(vec![Array::U8(vec![1, 2]), Array::U8(vec![])])
        );
        // Keys come back in file order.
        assert_eq!(m.iter().next().unwrap().0, "u8");
    }
}

#[test]
fn typed_getters_name_key_and_type() {
    let mut r = Raw::header(3, 0, 2);
    r.key("neg", 5).bytes(&(-1i32).to_le_bytes());
    r.key("s", 8).str("x");
    let f = GgufFile::from_bytes(r.0).unwrap();
    let m = f.metadata();
    let e = m.get_u32("neg").unwrap_err().to_string();
    assert!(
        e.contains("\"neg\"") && e.contains("i32 -1") && e.contains("u32"),
        "{e}"
    );
    let e = m.get_f32("s").unwrap_err().to_string();
    assert!(e.contains("\"s\"") && e.contains("string"), "{e}");
    let e = m.get_u32("absent").unwrap_err().to_string();
    assert!(e.contains("\"absent\"") && e.contains("missing"), "{e}");
    assert_eq!(m.try_u32("absent").unwrap(), None);
    assert_eq!(m.get_i32("neg").unwrap(), -1);
}

fn one_tensor_file(
    alignment: Option<u32>,
    offset: u64,
    dims: &[u64],
    ty: u32,
    data_len: usize,
) -> Vec<u8> {
    let n_kv = u64::from(alignment.is_some());
    let mut r = Raw::header(3, 1, n_kv);
    if let Some(a) = alignment {
        r.key("general.alignment", 4).u32(a);
    }
    r.str("w").u32(dims.len() as u32);
    for &d in dims {
        r.u64(d);
    }
    r.u32(ty).u64(offset);
    r.pad_to(alignment.filter(|a| a.is_power_of_two()).unwrap_or(32) as usize);
    r.0.extend((0..data_len).map(|i| i as u8));
    r.0
}

#[test]
fn tensors_respect_alignment() {
    // Default alignment 32.
    let f = GgufFile::from_bytes(one_tensor_file(None, 0, &[4, 2], 0, 32)).unwrap();
    assert_eq!(f.data_offset() % 32, 0);
    let t = f.tensor("w").unwrap();
    assert_eq!((t.ty, t.n_elements, t.n_bytes), (GgmlType::F32, 8, 32));
    assert_eq!(f.tensor_data(t)[1], 1);
    // Custom alignment 64: data section and offsets follow it.
    let f = GgufFile::from_bytes(one_tensor_file(Some(64), 64, &[32], 2, 128)).unwrap();
    assert_eq!(f.alignment(), 64);
    assert_eq!(f.data_offset() % 64, 0);
    let t = f.tensor("w").unwrap();
    assert_eq!((t.ty, t.n_bytes), (GgmlType::Q4_0, 18));
    assert_eq!(f.tensor_data(t)[0], 64);
}

#[test]
fn bad_tensors_are_typed_errors() {
    use ErrorKind::*;
    assert!(matches!(
        kind(one_tensor_file(None, 16, &[4], 0, 64)),
        UnalignedTensor { offset: 16, .. }
    ));
    assert!(matches!(
        kind(one_tensor_file(None, 0, &[4, 0], 0, 64)),
        BadDimensions { .. }
    ));
    assert!(matches!(
        kind(one_tensor_file(None, 0, &[1 << 40, 1 << 40], 0, 64)),
        BadDimensions { .. }
    ));
    assert!(matches!(
        kind(one_tensor_file(None, 0, &[4, 1, 1, 1, 1], 0, 64)),
        BadDimensions { .. }
    ));
    assert!(matches!(
        kind(one_tensor_file(None, 0, &[31], 2, 64)),
        BadDimensions { .. }
    ));
    assert!(matches!(
        kind(one_tensor_file(None, 0, &[4], 4, 64)),
        UnknownTensorType { type_id: 4, .. }
    ));
    assert!(matches!(
        kind(one_tensor_file(None, 0, &[64], 0, 64)),
        TensorOutOfBounds { .. }
    ));
    assert!(matches!(
        kind(one_tensor_file(None, u64::MAX - 31, &[4], 0, 64)),
        TensorOutOfBounds { .. }
    ));
    assert!(matches!(
        kind(one_tensor_file(Some(48), 0, &[4], 0, 64)),
        BadAlignment { .. }
    ));
    assert!(matches!(
        kind(one_tensor_file(Some(0), 0, &[4], 0, 64)),
        BadAlignment { .. }
    ));

    // Two tensors with one name.
    let mut r = Raw::header(3, 2, 0);
    for _ in 0..2 {
        r.str("w").u32(1).u64(8).u32(0).u64(0);
    }
    r.pad_to(32).bytes(&[0; 32]);
    assert!(matches!(kind(r.0), DuplicateTensor { .. }));
}

#[test]
fn bad_headers_are_typed_errors() {
    use ErrorKind::*;
    assert!(matches!(kind(b"GGML\x03\0\0\0".to_vec()), BadMagic { .. }));
    assert!(matches!(
        kind(Raw::header(1, 0, 0).0),
        UnsupportedVersion { version: 1 }
    ));
    assert!(matches!(kind(b"GG".to_vec()), Truncated { .. }));
    assert!(matches!(kind(Vec::new()), Truncated { .. }));

    let mut r = Raw::header(3, 0, 1);
    r.key("k", 13).u32(0);
    assert!(matches!(kind(r.0), UnknownValueType { type_id: 13, .. }));

    let mut r = Raw::header(3, 0, 1);
    r.key("b", 7).bytes(&[2]);
    assert!(matches!(kind(r.0), InvalidBool { value: 2, .. }));

    let mut r = Raw::header(3, 0, 1);
    r.key("s", 8).u64(2).bytes(&[0xff, 0xfe]);
    assert!(matches!(kind(r.0), InvalidUtf8 { .. }));

    let mut r = Raw::header(3, 0, 2);
    r.key("k", 0).bytes(&[1]).key("k", 0).bytes(&[2]);
    assert!(matches!(kind(r.0), DuplicateKey { .. }));

    let mut r = Raw::header(3, 0, 1);
    r.key("deep", 9);
    for _ in 0..20 {
        r.u32(9).u64(1);
    }
    r.u32(0).u64(0);
    assert!(matches!(kind(r.0), NestingTooDeep { .. }));
}

#[test]
fn huge_claimed_counts_fail_before_allocating() {
    use ErrorKind::*;
    // 2^60 tensors, 2^60 keys, a 1 GB string and a 1 GB array in a tiny file:
    // each must be refused by the size check, not by an allocation failure.
    assert!(matches!(
        kind(Raw::header(3, 1 << 60, 0).0),
        CountTooLarge { .. }
    ));
    assert!(matches!(
        kind(Raw::header(3, 0, 1 << 60).0),
        CountTooLarge { .. }
    ));
    let mut r = Raw::header(3, 0, 1);
    r.u64(1 << 30).bytes(b"key and more bytes");
    assert!(matches!(
        kind(r.0),
        Truncated {
            need: 1073741824,
            ..
        }
    ));
    let mut r = Raw::header(3, 0, 1);
    r.key("a", 9).u32(8).u64(1 << 30);
    assert!(matches!(
        kind(r.0),
        CountTooLarge {
            count: 1073741824,
            ..
        }
    ));
    let mut r = Raw::header(3, 0, 1);
    r.key("a", 9).u32(12).u64(u64::MAX);
    assert!(matches!(kind(r.0), CountTooLarge { .. }));
}

#[test]
fn writer_round_trip() {
    let data_a: Vec<u8> = (0..72).map(|i| i as u8).collect();
    let data_b = vec![7u8; 18 * 4];
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", Value::String("llama".into()));
    w.add_metadata("general.alignment", Value::U32(64));
    w.add_metadata("f", Value::F64(2.5));
    w.add_metadata("b", Value::Bool(true));
    w.add_metadata(
        "toks",
        Value::Array(Array::String(vec!["<s>".into(), "▁a".into()])),
    );
    w.add_metadata(
        "nested",
        Value::Array(Array::Array(vec![
            Array::I16(vec![-1, 2]),
            Array::I16(vec![]),
        ])),
    );
    w.add_tensor("a", GgmlType::F16, &[4, 9], &data_a).unwrap();
    w.add_tensor("b", GgmlType::Q4_0, &[64, 2], &data_b)
        .unwrap();
    assert!(w.add_tensor("a", GgmlType::F16, &[4, 9], &data_a).is_err());
    assert!(w.add_tensor("c", GgmlType::F16, &[5], &data_a).is_err());
    let mut bytes = Vec::new();
    let n = w.write_to(&mut bytes).unwrap();
    assert_eq!(n, bytes.len() as u64);
    assert_eq!(bytes.len() % 64, 0);

    let f = GgufFile::from_bytes(bytes).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), 64);
    let m = f.metadata();
    assert_eq!(m.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(m.get_f32("f").unwrap(), 2.5);
    assert!(m.get_bool("b").unwrap());
    assert_eq!(m.get_str_array("toks").unwrap()[1], "▁a");
    assert_eq!(
        m.get_array("nested").unwrap(),
        &Array::Array(vec![Array::I16(vec![-1, 2]), Array::I16(vec![])])
    );
    let a = f.tensor("a").unwrap();
    assert_eq!((a.dims.as_slice(), a.ty), (&[4u64, 9][..], GgmlType::F16));
    assert_eq!(f.tensor_data(a), &data_a[..]);
    let b = f.tensor("b").unwrap();
    assert_eq!(b.offset % 64, 0);
    assert_eq!(f.tensor_data(b), &data_b[..]);
    assert!(f.require_tensor("zzz").is_err());
}
