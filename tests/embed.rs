//! End-to-end tests of the `cm3 embed` tools.
mod common;

use std::fs;

use cm3_embed::preprocess::{CLIP_SIZE, preprocess_bytes};
use common::*;

#[test]
fn tokenize_writes_77_id_rows_and_counts_truncation() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let input = tmp.path().join("captions.txt");
    let long = "a very long caption ".repeat(40);
    fs::write(
        &input,
        format!("Hello World!\n{long}\n<break> is plain text here\n"),
    )
    .expect("w");
    let out = tmp.path().join("ids.jsonl");
    let res = run_ok(&[
        "embed",
        "tokenize",
        "--input",
        input.to_str().expect("p"),
        "--out",
        out.to_str().expect("p"),
    ]);
    assert!(
        String::from_utf8_lossy(&res.stderr).contains("3 rows written"),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert!(String::from_utf8_lossy(&res.stderr).contains("1 longer than 77"));
    let rows: Vec<Vec<u32>> = fs::read_to_string(&out)
        .expect("read")
        .lines()
        .map(|l| serde_json::from_str(l).expect("row"))
        .collect();
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r.len() == 77));
    // The CLIP notebook's printed output for "Hello World!".
    assert_eq!(&rows[0][..6], &[49406, 3306, 1002, 256, 49407, 0]);
    assert_eq!(rows[1][76], 49407);
}

#[test]
fn preprocess_writes_a_numpy_tensor_in_argument_order() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pairs = sample_pairs();
    let (a, b) = (&pairs[0].image, &pairs[5].image);
    let out = tmp.path().join("x.npy");
    run_ok(&[
        "embed",
        "preprocess",
        b.to_str().expect("p"),
        a.to_str().expect("p"),
        "--out",
        out.to_str().expect("p"),
    ]);
    let file = fs::read(&out).expect("npy");
    let header_len = usize::from(u16::from_le_bytes([file[8], file[9]]));
    let header = std::str::from_utf8(&file[10..10 + header_len]).expect("header");
    assert!(
        header.contains("'<f4'") && header.contains("(2, 3, 224, 224)"),
        "{header}"
    );
    let values: Vec<f32> = file[10 + header_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let per = 3 * (CLIP_SIZE * CLIP_SIZE) as usize;
    assert_eq!(values.len(), 2 * per);
    assert_eq!(
        values[..per],
        preprocess_bytes(&fs::read(b).expect("b"), CLIP_SIZE).expect("b")[..]
    );
    assert_eq!(
        values[per..],
        preprocess_bytes(&fs::read(a).expect("a"), CLIP_SIZE).expect("a")[..]
    );
    // A file that is not an image is an error naming it, and nothing is written.
    let bad = tmp.path().join("bad.jpg");
    fs::write(&bad, b"not an image").expect("w");
    let out2 = tmp.path().join("y.npy");
    let err = run_err(&[
        "embed",
        "preprocess",
        bad.to_str().expect("p"),
        "--out",
        out2.to_str().expect("p"),
    ]);
    assert!(err.contains("bad.jpg"), "{err}");
    assert!(!out2.exists());
}
