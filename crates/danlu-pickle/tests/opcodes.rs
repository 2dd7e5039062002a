//! Opcodes of every protocol, tensor recognition, limits against pickle bombs, and proof that
//! nothing a pickle names is ever run.

// Helpers outside `#[test]` functions fail the test on bad corpus files, by design.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use danlu_fixtures::torch::{
    Obj, PickleWriter, billion_laughs_pickle, data_pickle, huge_shape_pickle, memo_flood_pickle,
    nested_lists_pickle, os_system_pickle, stack_global_eval_pickle, tensor, tensor_with,
};
use danlu_pickle::{Error, Limits, Value, parse, parse_at, scan};
use danlu_types::Dtype;

#[test]
fn protocol_0_text_opcodes() {
    // [1, True, 2.5, 'a\'b', 'é', 12345678901234567890, None] at protocol 0, with a memo PUT/GET.
    let data = b"(lp0\nI1\naI01\naF2.5\naS'a\\'b'\naV\\u00e9\nag0\naL12345678901234567890L\naNa.";
    let p = parse(data).unwrap();
    let Value::List(items) = &p.value else {
        panic!("{:?}", p.value)
    };
    assert_eq!(items[0], Value::Int(1));
    assert_eq!(items[1], Value::Bool(true));
    assert_eq!(items[2], Value::Float(2.5));
    assert_eq!(items[3], Value::Str("a'b".into()));
    assert_eq!(items[4], Value::Str("é".into()));
    // GET 0 is the list itself: a cycle.
    assert_eq!(items[5], Value::Recursive);
    assert_eq!(items[6], Value::BigInt("12345678901234567890".into()));
    assert_eq!(items[7], Value::None);
    assert!(p.safety.safe);
}

#[test]
fn protocol_4_and_5_opcodes() {
    let mut data = vec![0x80, 5, 0x95];
    let body: Vec<u8> = [
        &[0x8f, 0x94, b'(', b'K', 1, b'K', 2, 0x90][..], // set {1, 2}, memoized
        &[b'(', b'K', 3, 0x91][..],                      // frozenset {3}
        &[0x8e][..],
        &3u64.to_le_bytes()[..],
        b"xyz",
        &[0x96][..],
        &1u64.to_le_bytes()[..],
        b"!",
        &[0x8d][..],
        &2u64.to_le_bytes()[..],
        b"hi",
        &[b'C', 1, b'b', b'B'][..],
        &2u32.to_le_bytes()[..],
        b"cd",
        &[0x8a, 9, 0, 0, 0, 0, 0, 0, 0, 0, 1][..], // 2**64
        &[0x8b][..],
        &1i32.to_le_bytes()[..],
        &[0xff][..], // -1
        &[b'h', 0][..],
        &[b't', b'.'][..],
    ]
    .concat();
    data.extend((body.len() as u64 - 1).to_le_bytes());
    // A MARK must open the final TUPLE: put it before the body.
    let mut framed = data.clone();
    framed.push(b'(');
    framed.extend(&body);
    let p = parse(&framed).unwrap();
    let Value::Tuple(items) = &p.value else {
        panic!("{:?}", p.value)
    };
    assert_eq!(items[0], Value::Set(vec![Value::Int(1), Value::Int(2)]));
    assert_eq!(items[1], Value::FrozenSet(vec![Value::Int(3)]));
    assert_eq!(items[2], Value::Bytes(b"xyz".to_vec()));
    assert_eq!(items[3], Value::ByteArray(b"!".to_vec()));
    assert_eq!(items[4], Value::Str("hi".into()));
    assert_eq!(items[5], Value::Bytes(b"b".to_vec()));
    assert_eq!(items[6], Value::Bytes(b"cd".to_vec()));
    assert_eq!(items[7], Value::BigInt("18446744073709551616".into()));
    assert_eq!(items[8], Value::Int(-1));
    assert_eq!(items[9], items[0]);
}

#[test]
fn memoized_dict_filled_later_is_seen_through_the_memo() {
    // d = {}; memo[0] = d; d['k'] = 1; result (d, memo[0])
    let p = parse(b"\x80\x02}q\x00X\x01\x00\x00\x00kK\x01sh\x00\x86.").unwrap();
    let Value::Tuple(items) = &p.value else {
        panic!()
    };
    assert_eq!(items[0], items[1]);
    assert_eq!(items[0].get("k"), Some(&Value::Int(1)));
}

#[test]
fn torch_tensors_are_described_from_their_rebuild_calls() {
    let bytes: Vec<u8> = (0..6u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let root = Obj::OrderedDict(vec![
        ("w".into(), tensor_with(Dtype::F32, &[2, 3], bytes)),
        ("h".into(), tensor(Dtype::F16, &[4])),
        ("f8".into(), tensor(Dtype::F8E4m3, &[5])),
        (
            "p".into(),
            Obj::Parameter(danlu_fixtures::torch::TensorSpec {
                dtype: Dtype::Bf16,
                shape: vec![7],
                data: danlu_fixtures::torch::TensorData::Zeros,
            }),
        ),
    ]);
    let (pickle, _) = data_pickle(&root);
    let p = parse(&pickle).unwrap();
    let t = |k: &str| match p.value.get(k) {
        Some(Value::Tensor(t)) => t.clone(),
        other => panic!("{k}: {other:?}"),
    };
    let w = t("w");
    assert_eq!(
        (w.shape.clone(), w.stride.clone()),
        (vec![2, 3], vec![3, 1])
    );
    assert_eq!(w.dtype.dtype, Some(Dtype::F32));
    assert_eq!(w.storage.key, "0");
    assert_eq!(w.storage.storage_type, "torch.FloatStorage");
    assert!(w.is_contiguous() && !w.parameter);
    assert_eq!(t("h").dtype.dtype, Some(Dtype::F16));
    let f8 = t("f8");
    assert_eq!(f8.dtype.name, "float8_e4m3fn");
    assert_eq!(f8.storage.dtype, None, "untyped storage counts bytes");
    let param = t("p");
    assert!(param.parameter && param.requires_grad);
    assert_eq!(param.dtype.dtype, Some(Dtype::Bf16));
    // float8 goes through _rebuild_tensor_v3 and UntypedStorage, which A1111 does not allow.
    assert!(!p.safety.safe);
    assert!(
        p.safety
            .globals
            .contains(&"torch._utils._rebuild_tensor_v3".to_owned())
    );
}

#[test]
fn plain_checkpoint_pickle_is_safe_by_a1111_rules() {
    let root = danlu_fixtures::torch::checkpoint(&[("model.x.weight", Dtype::F32, &[2, 2])], 3);
    let (pickle, _) = data_pickle(&root);
    let p = parse(&pickle).unwrap();
    assert!(p.safety.safe, "{:?}", p.safety);
    assert_eq!(
        p.safety.globals,
        [
            "collections.OrderedDict",
            "torch.FloatStorage",
            "torch._utils._rebuild_tensor_v2"
        ]
    );
}

#[test]
fn numpy_arrays_and_scalars_are_described() {
    // numpy.core.multiarray._reconstruct(numpy.ndarray, (0,), b'b') + BUILD
    // (1, (2, 3), dtype('<f4'), False, 24 bytes); then numpy scalar(dtype('<f8'), 8 bytes).
    let mut w = PickleWriter::new(2);
    w.mark();
    w.global("numpy.core.multiarray", "_reconstruct")
        .global("numpy", "ndarray")
        .mark()
        .int(0)
        .tuple()
        .raw(b"C\x01b")
        .raw(&[0x87])
        .reduce();
    w.mark().int(1).mark().int(2).int(3).tuple();
    w.global("numpy", "dtype")
        .str("f4")
        .bool(false)
        .bool(true)
        .raw(&[0x87])
        .reduce();
    w.mark()
        .int(3)
        .str("<")
        .none()
        .none()
        .none()
        .int(-1)
        .int(-1)
        .int(0)
        .tuple()
        .raw(b"b");
    w.bool(false)
        .raw(b"C\x18")
        .raw(&[0u8; 24])
        .tuple()
        .raw(b"b");
    w.global("numpy.core.multiarray", "scalar");
    w.global("numpy", "dtype")
        .str("f8")
        .bool(false)
        .bool(true)
        .raw(&[0x87])
        .reduce();
    w.raw(b"C\x08")
        .raw(&1.5f64.to_le_bytes())
        .raw(&[0x86])
        .reduce();
    w.tuple();
    let p = parse(&w.stop()).unwrap();
    let Value::Tuple(items) = &p.value else {
        panic!("{:?}", p.value)
    };
    let Value::Array(a) = &items[0] else {
        panic!("{:?}", items[0])
    };
    assert_eq!(a.shape, [2, 3]);
    assert_eq!(a.dtype.as_deref(), Some("<f4"));
    assert_eq!(a.data_len, 24);
    assert_eq!(
        items[1],
        Value::Scalar {
            dtype: "f8".into(),
            bytes: 1.5f64.to_le_bytes().to_vec()
        }
    );
    assert!(
        p.safety.safe,
        "numpy globals are on A1111's list: {:?}",
        p.safety
    );
}

#[test]
fn extensions_and_out_of_band_buffers_are_findings() {
    let p = parse(b"\x80\x02\x82\x05.").unwrap();
    assert_eq!(p.value, Value::Extension(5));
    assert!(!p.safety.safe);
    assert!(p.safety.findings[0].contains("extension code 5"));
    let b = parse(b"\x80\x05\x97\x98.").unwrap();
    assert_eq!(b.value, Value::Buffer);
    assert!(!b.safety.safe);
}

#[test]
fn os_system_pickle_is_reported_and_never_run() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pwned");
    let cmd = format!("touch {}", marker.display());
    let p = parse(&os_system_pickle(&cmd)).unwrap();
    assert!(!marker.exists(), "the pickle's command ran");
    assert!(!p.safety.safe);
    assert_eq!(p.safety.globals, ["os.system"]);
    let Value::Call(call) = &p.value else {
        panic!("{:?}", p.value)
    };
    assert_eq!(
        call.callable,
        Value::Global {
            module: "os".into(),
            name: "system".into()
        }
    );
    assert_eq!(call.args, Value::Tuple(vec![Value::Str(cmd)]));
    // The eval variant through STACK_GLOBAL and the memo.
    let e = parse(&stack_global_eval_pickle("__import__('os').system('true')")).unwrap();
    assert_eq!(e.safety.globals, ["builtins.eval"]);
    assert!(!e.safety.safe);
    assert!(!marker.exists());
}

#[test]
fn deep_nesting_is_stopped_at_the_depth_limit() {
    let err = parse(&nested_lists_pickle(100_000)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Limit {
                limit: "nesting depth",
                ..
            }
        ),
        "{err}"
    );
    // Within the limit it reads, in a test thread's 2 MiB stack.
    let max = Limits::default().max_depth;
    assert!(parse(&nested_lists_pickle(max)).is_ok());
    assert!(parse(&nested_lists_pickle(max + 2)).is_err());
}

#[test]
fn memo_floods_are_stopped() {
    let mut limits = Limits::default();
    limits.max_memo = 1000;
    let r = parse_at(&memo_flood_pickle(5000), 0, &limits);
    let err = r.value.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Limit {
                limit: "memo entries",
                max: 1000,
                ..
            }
        ),
        "{err}"
    );
    assert!(!r.safety.safe);
}

#[test]
fn billion_laughs_expansion_is_bounded() {
    // 10^9 elements if expanded; the shared structure itself is tiny.
    let err = parse(&billion_laughs_pickle(9)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Limit {
                limit: "total elements",
                ..
            }
        ),
        "{err}"
    );
    assert!(parse(&billion_laughs_pickle(2)).is_ok());
}

#[test]
fn billion_element_shapes_are_errors() {
    // 2^20 x 2^20 x 2^20 = 2^60 elements, over the 2^40 limit.
    let err = parse(&huge_shape_pickle(1 << 20, 3)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Limit {
                limit: "tensor elements",
                ..
            }
        ),
        "{err}"
    );
    // 2^32 x 2^32 x 2^32 overflows u64.
    let err = parse(&huge_shape_pickle(1 << 32, 3)).unwrap_err();
    assert!(matches!(err, Error::Limit { .. }), "{err}");
}

#[test]
fn huge_declared_lengths_are_truncation_errors_without_allocating() {
    let mut data = vec![0x80, 4, 0x8e];
    data.extend(u64::MAX.to_le_bytes());
    let err = parse(&data).unwrap_err();
    assert!(matches!(err, Error::Truncated { offset: 2, .. }), "{err}");
    let err = parse(b"\x80\x02X\xff\xff\xff\xffab").unwrap_err();
    assert!(matches!(err, Error::Truncated { offset: 2, .. }), "{err}");
}

#[test]
fn errors_say_where() {
    assert_eq!(parse(b"").unwrap_err(), Error::Empty);
    let e = parse(b"\x80\x02K\x01\xff").unwrap_err();
    assert_eq!(
        e,
        Error::UnknownOpcode {
            offset: 4,
            opcode: 0xff
        }
    );
    let e = parse(b"\x80\x02a.").unwrap_err();
    assert!(
        matches!(
            e,
            Error::Malformed {
                offset: 2,
                opcode: "APPEND",
                ..
            }
        ),
        "{e}"
    );
    let e = parse(b"\x80\x02K\x01").unwrap_err();
    assert!(matches!(e, Error::Truncated { offset: 4, .. }), "{e}");
    assert!(e.to_string().contains("offset 4"));
    let e = parse(b"\x80\x09.").unwrap_err();
    assert!(
        matches!(
            e,
            Error::Malformed {
                opcode: "PROTO",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn scan_flags_garbage_after_the_last_pickle() {
    let mut data = parse_ok_pickle();
    assert!(scan(&data, &Limits::default()).safe);
    data.extend(b"\xff\xff");
    let s = scan(&data, &Limits::default());
    assert!(!s.safe);
    assert!(
        s.findings.iter().any(|f| f.contains("unknown opcode")),
        "{s:?}"
    );
}

fn parse_ok_pickle() -> Vec<u8> {
    let mut w = PickleWriter::new(2);
    w.int(5);
    w.stop()
}
