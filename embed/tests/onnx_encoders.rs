//! The CLIP encoders through ONNX Runtime, on a small CLIP-shaped model with random weights
//! (`fixtures/tiny_clip`, made by its `make_tiny_clip.py`), against the outputs Python
//! onnxruntime gives for the same model and inputs.
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cm3_embed::npy::Npy;
use cm3_embed::onnx::{EMBED_DIM, TextEncoder, VisionEncoder, find_onnxruntime, normalize_rows};
use cm3_embed::{ClipTokenizer, EmbedError};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_clip")
}

/// ONNX Runtime, installed by the project's set-up script on first use (a fresh machine has none).
fn runtime() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        if find_onnxruntime().is_err() {
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/setup-onnxruntime.sh");
            let status = std::process::Command::new("bash")
                .arg(&script)
                .status()
                .expect("run setup script");
            assert!(status.success(), "{} failed", script.display());
        }
        find_onnxruntime().expect("ONNX Runtime after set-up");
    });
}

/// A .npy file: (shape, raw data bytes, dtype descr).
fn read_npy(path: &Path) -> (Vec<usize>, Vec<u8>, String) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let npy = Npy::parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (npy.shape, npy.data, npy.descr)
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn i64s(bytes: &[u8]) -> Vec<i64> {
    bytes
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

/// The pixel values the reference was computed on (see make_tiny_clip.py): a formula, so that
/// 1.8 MB of input need not be committed.
fn pixel_values(n: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(n * 3 * 224 * 224);
    for b in 0..n {
        for c in 0..3 {
            for y in 0..224 {
                for x in 0..224 {
                    let val = (0.01 * (x as f64 + 1.0) * (c as f64 + 1.0)).sin()
                        + (0.013 * (y as f64 + 1.0) * (b as f64 + 1.0)).cos()
                        - 0.5;
                    v.push(val as f32);
                }
            }
        }
    }
    v
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn vision_encoder_matches_python_onnxruntime_at_every_batch_size() {
    runtime();
    let (shape, data, descr) = read_npy(&fixtures().join("reference/image_embeds.npy"));
    assert_eq!(
        (shape.as_slice(), descr.as_str()),
        (&[3usize, EMBED_DIM][..], "<f4")
    );
    let want = f32s(&data);
    let mut enc = VisionEncoder::load(&fixtures().join("vision"), 1).expect("load");
    let batched = enc.embed(pixel_values(3), 3).expect("embed");
    let diff = max_abs_diff(&batched, &want);
    assert!(diff < 1e-5, "max abs difference to onnxruntime {diff}");
    // One at a time gives the same rows, and a second run the same values.
    let all = pixel_values(3);
    let per = 3 * 224 * 224;
    for i in 0..3 {
        let one = enc
            .embed(all[i * per..(i + 1) * per].to_vec(), 1)
            .expect("embed one");
        assert!(max_abs_diff(&one, &batched[i * EMBED_DIM..(i + 1) * EMBED_DIM]) < 1e-5);
    }
    assert_eq!(enc.embed(pixel_values(3), 3).expect("again"), batched);
    let mut unit = batched.clone();
    normalize_rows(&mut unit, EMBED_DIM);
    for row in unit.chunks_exact(EMBED_DIM) {
        let norm: f32 = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
    }
}

#[test]
fn text_encoder_matches_python_onnxruntime_on_our_token_rows() {
    runtime();
    let texts: Vec<String> = serde_json::from_slice(
        &std::fs::read(fixtures().join("reference/texts.json")).expect("texts"),
    )
    .expect("json");
    let (shape, ids, _) = read_npy(&fixtures().join("reference/input_ids.npy"));
    assert_eq!(shape, vec![texts.len(), 77]);
    let ref_ids = i64s(&ids);
    // Our tokenizer gives the rows the reference was computed on.
    let tok = ClipTokenizer::openai();
    let ours: Vec<u32> = texts.iter().flat_map(|t| tok.tokenize_77(t).0).collect();
    assert_eq!(
        ours.iter().map(|&i| i64::from(i)).collect::<Vec<_>>(),
        ref_ids
    );
    let (_, mask, _) = read_npy(&fixtures().join("reference/attention_mask.npy"));
    assert_eq!(
        i64s(&mask),
        ref_ids
            .iter()
            .map(|&i| i64::from(i != 0))
            .collect::<Vec<_>>()
    );
    let (shape, want, _) = read_npy(&fixtures().join("reference/text_embeds.npy"));
    assert_eq!(shape, vec![texts.len(), EMBED_DIM]);
    let mut enc = TextEncoder::load(&fixtures().join("text"), 1).expect("load");
    let got = enc.embed(&ours, texts.len()).expect("embed");
    let diff = max_abs_diff(&got, &f32s(&want));
    assert!(diff < 1e-5, "max abs difference to onnxruntime {diff}");
}

/// A model with a dynamic sequence axis gets each batch cut to its longest row; the result is what
/// Python onnxruntime computed on the full 77 positions.
#[test]
fn text_batches_are_cut_to_their_longest_row_when_the_model_allows() {
    runtime();
    let (_, ids, _) = read_npy(&fixtures().join("reference/input_ids.npy"));
    let rows: Vec<u32> = i64s(&ids).iter().map(|&i| i as u32).collect();
    let n = rows.len() / 77;
    let (_, want, _) = read_npy(&fixtures().join("reference/text_embeds.npy"));
    let want = f32s(&want);
    let fixed = TextEncoder::load(&fixtures().join("text"), 1).expect("load");
    assert!(
        !fixed.trims_padding(),
        "a [batch, 77] model keeps 77 positions"
    );
    let mut dynamic = TextEncoder::load(&fixtures().join("text_dynamic"), 1).expect("load");
    assert!(dynamic.trims_padding());
    let cut = dynamic.embed(&rows, n).expect("embed");
    let full = dynamic.embed_full_length(&rows, n).expect("embed");
    assert!(
        max_abs_diff(&cut, &want) < 1e-5,
        "{}",
        max_abs_diff(&cut, &want)
    );
    assert!(max_abs_diff(&full, &want) < 1e-5);
    // One row alone is cut to its own length.
    let one = dynamic.embed(&rows[77..154], 1).expect("embed");
    assert!(max_abs_diff(&one, &want[512..1024]) < 1e-5);
}

#[test]
fn wrong_models_are_refused_with_a_reason() {
    runtime();
    let err = VisionEncoder::load(&fixtures().join("bad_signature"), 1).expect_err("bad signature");
    let msg = err.to_string();
    assert!(
        matches!(err, EmbedError::Model { .. }) && msg.contains("pixel_values"),
        "{msg}"
    );
    // The text model is not an image model.
    let msg = VisionEncoder::load(&fixtures().join("text"), 1)
        .expect_err("text as vision")
        .to_string();
    assert!(msg.contains("no input `pixel_values`"), "{msg}");
    let dir = tempfile::tempdir().expect("tempdir");
    let junk = dir.path().join("model.onnx");
    std::fs::write(&junk, b"this is not ONNX").expect("write");
    let msg = TextEncoder::load(&junk, 1).expect_err("junk").to_string();
    assert!(
        msg.contains("not a loadable ONNX model") && msg.contains("model.onnx"),
        "{msg}"
    );
    let msg = TextEncoder::load(&dir.path().join("missing"), 1)
        .expect_err("missing")
        .to_string();
    assert!(msg.contains("no such model file"), "{msg}");
}
