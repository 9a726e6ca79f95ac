//! CLIP score against numpy (`fixtures/clip_score/make.py` -> `expected.json`) on the embed
//! crate's tiny CLIP embeddings, and end to end (images and captions through the tiny ONNX CLIP
//! encoders) against Python onnxruntime + numpy.
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cm3_embed::npy::Npy;
use cm3_embed::onnx::find_onnxruntime;
use cm3_eval::EvalError;
use cm3_eval::clip_score::{ClipScore, ClipScorer, ClipScoring, ImageInput, clip_score};
use serde_json::Value;

const DIM: usize = 512;
const TOL: f64 = 1e-4;

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn tiny_clip() -> PathBuf {
    manifest().join("../embed/tests/fixtures/tiny_clip")
}

fn expected() -> Value {
    let path = manifest().join("tests/fixtures/clip_score/expected.json");
    serde_json::from_slice(&std::fs::read(&path).expect("expected.json")).expect("json")
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

/// Rows of a float32 .npy matrix [n, 512].
fn rows(path: &Path) -> Vec<Vec<f32>> {
    let npy = Npy::parse(&std::fs::read(path).expect("npy")).expect("parse npy");
    assert_eq!((npy.descr.as_str(), npy.shape[1]), ("<f4", DIM));
    npy.data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect::<Vec<_>>()
        .chunks_exact(DIM)
        .map(<[f32]>::to_vec)
        .collect()
}

fn assert_close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol, "{what}[{i}]: {g} vs numpy {w}");
    }
}

/// One case of expected.json against a computed score.
fn check_case(name: &str, got: &ClipScore, want: &Value) {
    let cos100: Vec<f64> = got.cosine.iter().map(|c| 100.0 * c).collect();
    let want_cos100: Vec<f64> = f64s(&want["cosine"]).iter().map(|c| 100.0 * c).collect();
    assert_close(&format!("{name} 100*cos"), &cos100, &want_cos100, TOL);
    assert_close(
        &format!("{name} per pair"),
        &got.per_pair,
        &f64s(&want["per_pair"]),
        TOL,
    );
    let mean = want["mean"].as_f64().expect("mean");
    assert!(
        (got.mean - mean).abs() <= TOL,
        "{name} mean {} vs numpy {mean}",
        got.mean
    );
    // torch computes in float32: within its rounding.
    let mean32 = want["mean_float32"].as_f64().expect("mean32");
    assert!(
        (got.mean - mean32).abs() <= 1e-3,
        "{name}: {} vs float32 {mean32}",
        got.mean
    );
}

#[test]
fn scores_equal_numpy_on_the_tiny_clip_embeddings() {
    let image = rows(&tiny_clip().join("reference/image_embeds.npy"));
    let text = rows(&tiny_clip().join("reference/text_embeds.npy"));
    let exp = expected();
    let cases = exp["cases"].as_object().expect("cases");
    assert_eq!(cases.len(), 3);
    for (name, case) in cases {
        let pairs = case["pairs"].as_array().expect("pairs");
        let (mut img, mut txt) = (Vec::new(), Vec::new());
        for p in pairs {
            let i = p[0].as_u64().expect("i") as usize;
            let j = p[1].as_u64().expect("j") as usize;
            img.extend_from_slice(&image[i]);
            txt.extend_from_slice(&text[j]);
        }
        let got = clip_score(&img, &txt, DIM).expect("clip score");
        check_case(name, &got, case);
    }
    // The case made for it: a positive mean that is not the mean of the clamped pairs.
    let case = &exp["cases"]["positive_mean"];
    let mean = case["mean"].as_f64().expect("mean");
    let clamped = f64s(&case["per_pair"]).iter().sum::<f64>() / 4.0;
    assert!(
        mean > 0.0 && (mean - clamped).abs() > 0.01,
        "{mean} {clamped}"
    );
}

#[test]
fn scores_do_not_depend_on_embedding_length() {
    let image = rows(&tiny_clip().join("reference/image_embeds.npy"));
    let text = rows(&tiny_clip().join("reference/text_embeds.npy"));
    let (img, txt) = (image.concat(), text[..3].concat());
    let base = clip_score(&img, &txt, DIM).expect("score");
    // A power of two scales exactly: the same floats; another factor within f32 rounding.
    let scaled: Vec<f32> = img.iter().map(|v| v * 8.0).collect();
    assert_eq!(clip_score(&scaled, &txt, DIM).expect("score"), base);
    let scaled: Vec<f32> = img.iter().map(|v| v * 7.3).collect();
    let again = clip_score(&scaled, &txt, DIM).expect("score");
    assert_close("scaled", &again.cosine, &base.cosine, 1e-7);
    // A pair with itself scores 100.
    let same = clip_score(&img, &img, DIM).expect("score");
    assert_close("self", &same.per_pair, &[100.0; 3], 1e-9);
    assert!((same.mean - 100.0).abs() < 1e-9);
}

fn reason(err: EvalError) -> String {
    match err {
        EvalError::Input { reason, .. } | EvalError::Numeric(reason) => reason,
        other => panic!("unexpected error kind: {other}"),
    }
}

#[test]
fn bad_embeddings_are_refused() {
    let one = [1.0f32, 0.0, 0.0, 0.0];
    let two = [1.0f32, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0];
    let r = reason(clip_score(&two, &one, 4).expect_err("2 vs 1"));
    assert!(r.contains("2 image embeddings but 1 text"), "{r}");
    let r = reason(clip_score(&one[..3], &one[..3], 4).expect_err("partial row"));
    assert!(r.contains("not whole rows of 4"), "{r}");
    let r = reason(clip_score(&one, &one, 0).expect_err("dim 0"));
    assert!(r.contains("width 0"), "{r}");
    let r = reason(clip_score(&[], &[], 4).expect_err("empty"));
    assert!(r.contains("no image"), "{r}");
    let zero = [0.0f32; 4];
    let err = clip_score(&two, &[one, zero].concat(), 4).expect_err("zero");
    assert!(matches!(err, EvalError::Numeric(_)));
    let r = reason(err);
    assert!(r.contains("text embedding 1 is the zero vector"), "{r}");
    let nan = [f32::NAN, 0.0, 0.0, 0.0];
    let r = reason(clip_score(&nan, &one, 4).expect_err("nan"));
    assert!(
        r.contains("image embedding 0") && r.contains("not finite"),
        "{r}"
    );
}

/// ONNX Runtime, installed by the project's set-up script on first use, as the embed crate's
/// tests do.
fn runtime() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        if find_onnxruntime().is_err() {
            let script = manifest().join("../scripts/setup-onnxruntime.sh");
            let status = std::process::Command::new("bash")
                .arg(&script)
                .status()
                .expect("run setup script");
            assert!(status.success(), "{} failed", script.display());
        }
        find_onnxruntime().expect("ONNX Runtime after set-up");
    });
}

/// The PIL-decoded pixels of the embed crate's preprocessing fixture: (width, height, RGB).
fn images(names: &[Value]) -> Vec<(u32, u32, Vec<u8>)> {
    let gz = std::fs::read(
        manifest().join("../embed/tests/fixtures/clip_preprocess/pil_decoded_rgb.bin.gz"),
    )
    .expect("decoded pixels");
    let mut all = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut all)
        .expect("gunzip");
    let mut out = Vec::new();
    let mut offset = 0;
    for name in names {
        let (w, h) = name
            .as_str()
            .and_then(|n| n.split_once('_'))
            .map(|(w, h)| (w.parse::<u32>().expect("w"), h.parse::<u32>().expect("h")))
            .expect("w_h name");
        let n = (w * h * 3) as usize;
        out.push((w, h, all[offset..offset + n].to_vec()));
        offset += n;
    }
    assert_eq!(offset, all.len());
    out
}

#[test]
fn images_and_captions_score_as_python_onnxruntime() {
    runtime();
    let exp = expected();
    let e2e = &exp["end_to_end"];
    let imgs = images(e2e["images"].as_array().expect("images"));
    let inputs: Vec<ImageInput<'_>> = imgs
        .iter()
        .map(|(w, h, px)| ImageInput::Rgb {
            pixels: px,
            width: *w,
            height: *h,
        })
        .collect();
    let texts: Vec<&str> = e2e["texts"]
        .as_array()
        .expect("texts")
        .iter()
        .map(|t| t.as_str().expect("text"))
        .collect();
    let mut scorer =
        ClipScorer::load(&tiny_clip().join("vision"), &tiny_clip().join("text"), 1).expect("load");
    let got = scorer
        .score_pairs(&inputs, &texts[..3])
        .expect("score pairs");
    check_case("pairs", &got, &e2e["pairs"]);
    let against = scorer
        .score_against(&inputs, texts[3])
        .expect("score against");
    check_case("one caption", &against, &e2e["one_caption"]);

    // An image file (PNG, lossless) scores as its pixels.
    let dir = tempfile::tempdir().expect("tempdir");
    let (w, h, px) = &imgs[1];
    let png = dir.path().join("sample.png");
    image::save_buffer(&png, px, *w, *h, image::ExtendedColorType::Rgb8).expect("png");
    let mixed = [inputs[0], ImageInput::File(&png), inputs[2]];
    let from_file = scorer.score_pairs(&mixed, &texts[..3]).expect("file");
    assert_eq!(from_file, got);

    // Errors name the input.
    let err = scorer
        .score_pairs(&inputs[..2], &texts[..1])
        .expect_err("2 images, 1 caption");
    assert!(err.to_string().contains("2 images but 1 captions"), "{err}");
    let short = ImageInput::Rgb {
        pixels: &px[..10],
        width: *w,
        height: *h,
    };
    let err = scorer.score_against(&[short], "x").expect_err("short");
    assert!(err.to_string().contains("image 0 (208x495 RGB)"), "{err}");
    let missing = dir.path().join("missing.png");
    let err = scorer
        .score_against(&[ImageInput::File(&missing)], "x")
        .expect_err("missing");
    assert!(
        err.to_string().contains("missing.png") && err.to_string().contains("No such file"),
        "{err}"
    );
    let junk = dir.path().join("junk.png");
    std::fs::write(&junk, b"not an image").expect("write");
    let err = scorer
        .score_against(&[ImageInput::File(&junk)], "x")
        .expect_err("junk");
    assert!(err.to_string().contains("junk.png"), "{err}");
    let err = scorer.score_against(&[], "x").expect_err("none");
    assert!(err.to_string().contains("no images"), "{err}");
}
