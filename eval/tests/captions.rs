//! Caption metrics against pycocoevalcap 1.2's own output (fixtures in
//! `tests/fixtures/coco_caption_metrics`, see its SOURCE.txt).

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use cm3_eval::EvalError;
use cm3_eval::captions::{
    CaptionScores, ImageId, Prediction, Predictions, References, TokenizedImage, evaluate,
    evaluate_files, ptb_tokenize, ptb_tokenize_batch, read_predictions, read_references,
    score_tokenized,
};
use serde_json::{Value, json};

const TOL: f64 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/coco_caption_metrics")
}

fn oracle(name: &str) -> PathBuf {
    fixtures().join("oracle_fakecap_x_val2017").join(name)
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read(path).expect("fixture readable");
    if path.extension().is_some_and(|e| e == "gz") {
        let mut out = String::new();
        flate2::read::GzDecoder::new(&text[..])
            .read_to_string(&mut out)
            .expect("gzip fixture");
        serde_json::from_str(&out).expect("fixture JSON")
    } else {
        serde_json::from_slice(&text).expect("fixture JSON")
    }
}

/// An `{"id": ["caption", ...]}` fixture in file order (serde_json's map sorts keys, so read
/// it through `read_references`, which keeps the order).
fn ordered_map(name: &str) -> Vec<(ImageId, Vec<String>)> {
    read_references(oracle(name)).expect("oracle map").images
}

/// The oracle's predictions as a COCO results list in a temporary file.
fn oracle_predictions_file(dir: &Path) -> PathBuf {
    let list: Vec<Value> = ordered_map("res_raw.json")
        .into_iter()
        .map(|(id, caps)| json!({"image_id": id.to_json(), "caption": caps[0]}))
        .collect();
    let path = dir.join("results.json");
    std::fs::write(&path, serde_json::to_vec(&list).expect("json")).expect("write");
    path
}

fn assert_close(name: &str, got: f64, want: f64) {
    assert!(
        (got - want).abs() <= TOL,
        "{name}: got {got}, pycocoevalcap {want}"
    );
}

fn check_corpus(scores: &CaptionScores, corpus: &Value) {
    for (name, v) in cm3_eval::captions::METRICS.iter().zip(scores.values()) {
        assert_close(name, v, corpus[*name].as_f64().expect("oracle metric"));
    }
}

#[test]
fn oracle_raw_inputs_match_pycocoevalcap_corpus_and_per_image() {
    let dir = tempfile::tempdir().expect("tempdir");
    let scores = evaluate_files(oracle_predictions_file(dir.path()), oracle("gts_raw.json"))
        .expect("evaluates");
    let want = read_json(&oracle("scores.json"));
    check_corpus(&scores, &want["corpus"]);
    assert_eq!(scores.images, 126);
    let per_image = want["per_image"].as_object().expect("per_image");
    assert_eq!(scores.per_image.len(), per_image.len());
    for img in &scores.per_image {
        let w = &per_image[&img.image_id.to_string()];
        assert_close("CIDEr", img.cider, w["CIDEr"].as_f64().expect("cider"));
        assert_close(
            "ROUGE_L",
            img.rouge_l,
            w["ROUGE_L"].as_f64().expect("rouge"),
        );
        for (k, b) in img.bleu.iter().enumerate() {
            assert_close(
                "Bleu",
                *b,
                w[format!("Bleu_{}", k + 1)].as_f64().expect("bleu"),
            );
        }
    }
}

#[test]
fn oracle_tokenised_inputs_score_like_pycocoevalcap() {
    let res: HashMap<ImageId, Vec<String>> = ordered_map("res_ptbtok.json").into_iter().collect();
    let images: Vec<TokenizedImage> = ordered_map("gts_ptbtok.json")
        .into_iter()
        .map(|(image_id, references)| TokenizedImage {
            candidate: res[&image_id][0].clone(),
            image_id,
            references,
        })
        .collect();
    let scores = score_tokenized(&images).expect("scores");
    check_corpus(&scores, &read_json(&oracle("scores.json"))["corpus"]);
}

#[test]
fn tokenisation_of_the_oracle_inputs_is_the_jars() {
    for (raw, tok) in [
        ("gts_raw.json", "gts_ptbtok.json"),
        ("res_raw.json", "res_ptbtok.json"),
    ] {
        // One batch per side, in the oracle's order, as pycocoevalcap tokenises.
        let raw: Vec<String> = ordered_map(raw).into_iter().flat_map(|(_, c)| c).collect();
        let want: Vec<String> = ordered_map(tok).into_iter().flat_map(|(_, c)| c).collect();
        assert_eq!(ptb_tokenize_batch(&raw), want);
    }
}

#[test]
fn tokenisation_of_all_val2017_captions_is_the_jars() {
    let doc = read_json(&fixtures().join("ptb_val2017.json.gz"));
    let rows = doc["captions"].as_array().expect("captions");
    assert_eq!(rows.len(), 25_014);
    let raw: Vec<&str> = rows.iter().map(|r| r[2].as_str().expect("raw")).collect();
    let got = ptb_tokenize_batch(&raw);
    let differ: Vec<(&str, &str, &str)> = rows
        .iter()
        .zip(&got)
        .filter(|(r, g)| r[3].as_str() != Some(g.as_str()))
        .map(|(r, g)| {
            (
                r[2].as_str().unwrap_or(""),
                r[3].as_str().unwrap_or(""),
                g.as_str(),
            )
        })
        .take(10)
        .collect();
    assert!(differ.is_empty(), "(raw, jar, ours): {differ:#?}");
}

#[test]
fn tokenisation_of_hard_cases_is_the_jars() {
    let doc = read_json(&fixtures().join("ptb_tricky.json"));
    let pairs = doc["pairs"].as_array().expect("pairs");
    let raw: Vec<&str> = pairs.iter().map(|p| p[0].as_str().expect("raw")).collect();
    for (p, got) in pairs.iter().zip(ptb_tokenize_batch(&raw)) {
        assert_eq!(Some(got.as_str()), p[1].as_str(), "caption {:?}", p[0]);
    }
}

#[test]
fn tokenisation_of_perturbed_captions_is_the_jars() {
    let doc = read_json(&fixtures().join("ptb_perturbed.json.gz"));
    let pairs = doc["pairs"].as_array().expect("pairs");
    assert_eq!(pairs.len(), 3000);
    let raw: Vec<&str> = pairs.iter().map(|p| p[0].as_str().expect("raw")).collect();
    for (p, got) in pairs.iter().zip(ptb_tokenize_batch(&raw)) {
        assert_eq!(Some(got.as_str()), p[1].as_str(), "caption {:?}", p[0]);
    }
}

#[test]
fn a_caption_ending_in_an_initial_depends_on_the_next_caption() {
    // The jar's output (see ptb_tricky.json): its trailing context reads past the line, so
    // "K." before "A man" is "K" + ".".
    let got = ptb_tokenize_batch(&["reads K.", "A man", "reads K.", "Two men"]);
    assert_eq!(got, ["reads k", "a man", "reads k.", "two men"]);
    assert_eq!(ptb_tokenize("reads K."), "reads k.");
}

/// Reconstructs the val2017 leave-one-out input from the tokenisation fixture.
fn leave_one_out() -> (Predictions, References, Value) {
    let doc = read_json(&fixtures().join("ptb_val2017.json.gz"));
    let want = read_json(&fixtures().join("leave_one_out_val2017.json.gz"));
    let mut by_image: HashMap<i64, Vec<(i64, String)>> = HashMap::new();
    for r in doc["captions"].as_array().expect("captions") {
        let (ann, img) = (r[0].as_i64().expect("id"), r[1].as_i64().expect("image"));
        by_image
            .entry(img)
            .or_default()
            .push((ann, r[2].as_str().expect("raw").to_string()));
    }
    let mut predictions = Vec::new();
    let mut images = Vec::new();
    for id in want["image_order"].as_array().expect("order") {
        let id = id.as_i64().expect("image id");
        let mut caps = by_image.remove(&id).expect("image has captions");
        caps.sort();
        let first = caps.remove(0).1;
        predictions.push(Prediction {
            image_id: ImageId::Int(id),
            caption: first,
        });
        images.push((ImageId::Int(id), caps.into_iter().map(|c| c.1).collect()));
    }
    (
        Predictions {
            source: "loo predictions".into(),
            entries: predictions,
        },
        References {
            source: "loo references".into(),
            images,
        },
        want,
    )
}

#[test]
fn val2017_leave_one_out_matches_pycocoevalcap() {
    let (predictions, references, want) = leave_one_out();
    let scores = evaluate(&predictions, &references).expect("evaluates");
    assert_eq!((scores.images, scores.references), (5000, 20_014));
    check_corpus(&scores, &want["corpus"]);
    let cider = want["cider"].as_array().expect("cider");
    let max_diff = scores
        .per_image
        .iter()
        .zip(cider)
        .map(|(img, w)| (img.cider - w.as_f64().expect("cider")).abs())
        .fold(0.0, f64::max);
    assert!(max_diff <= TOL, "max per-image CIDEr difference {max_diff}");
}

// ---------------------------------------------------------------------------------------------
// Formats and errors

fn write(dir: &Path, name: &str, value: &Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec(value).expect("json")).expect("write");
    path
}

fn coco_refs() -> Value {
    json!({
        "images": [{"id": 2}, {"id": 1}],
        "annotations": [
            {"image_id": 1, "id": 10, "caption": "A dog runs on the grass."},
            {"image_id": 2, "id": 11, "caption": "A red bus on a street."},
            {"image_id": 1, "id": 12, "caption": "A brown dog running."},
            {"image_id": 2, "id": 13, "caption": "A bus parked by the road."},
        ]
    })
}

fn input_error(result: Result<CaptionScores, EvalError>) -> (String, String) {
    match result {
        Err(EvalError::Input { what, reason }) => (what, reason),
        other => panic!("expected an input error, got {other:?}"),
    }
}

#[test]
fn both_reference_formats_give_the_same_scores() {
    let dir = tempfile::tempdir().expect("tempdir");
    let coco = write(dir.path(), "coco.json", &coco_refs());
    // Written as text: the key order is the image order (serde_json's map would sort it).
    let map = dir.path().join("map.json");
    std::fs::write(
        &map,
        r#"{"2": ["A red bus on a street.", "A bus parked by the road."],
            "1": ["A dog runs on the grass.", "A brown dog running."]}"#,
    )
    .expect("write");
    let preds = write(
        dir.path(),
        "preds.json",
        &json!([{"image_id": 1, "caption": "a dog on grass"}, {"image_id": "2", "caption": "a bus"}]),
    );
    let a = evaluate_files(&preds, &coco).expect("coco format");
    let b = evaluate_files(&preds, &map).expect("map format");
    assert_eq!(a, b);
    // Images in the references' order (the "images" list), whatever the predictions' order.
    let order: Vec<String> = a.per_image.iter().map(|i| i.image_id.to_string()).collect();
    assert_eq!(order, ["2", "1"]);
    assert_eq!((a.images, a.references), (2, 4));
    assert!(
        a.values().iter().all(|v| v.is_finite() && *v > 0.0),
        "{:?}",
        a.values()
    );
    let refs = read_references(&coco).expect("reads");
    assert_eq!(
        refs.images[1].1,
        ["A dog runs on the grass.", "A brown dog running."]
    );
}

#[test]
fn input_errors_name_the_file_and_the_image() {
    let dir = tempfile::tempdir().expect("tempdir");
    let refs = write(dir.path(), "refs.json", &coco_refs());
    let case = |name: &str, preds: Value| {
        let p = write(dir.path(), name, &preds);
        input_error(evaluate_files(&p, &refs))
    };
    let (what, reason) = case("missing.json", json!([{"image_id": 7, "caption": "a cat"}]));
    assert!(
        what.ends_with("missing.json") && reason.contains("image 7"),
        "{what}: {reason}"
    );
    assert!(reason.contains("not in the references"), "{reason}");
    let (what, reason) = case(
        "dup.json",
        json!([{"image_id": 1, "caption": "a"}, {"image_id": 1, "caption": "b"}]),
    );
    assert!(
        what.ends_with("dup.json") && reason.contains("image 1"),
        "{what}: {reason}"
    );
    let (_, reason) = case(
        "empty_caption.json",
        json!([{"image_id": 2, "caption": "  "}]),
    );
    assert!(
        reason.contains("image 2") && reason.contains("empty caption"),
        "{reason}"
    );
    let (what, reason) = case("none.json", json!([]));
    assert!(
        what.ends_with("none.json") && reason.contains("no predictions"),
        "{reason}"
    );
    let (_, reason) = case("not_string.json", json!([{"image_id": 1, "caption": 5}]));
    assert!(reason.contains("image 1"), "{reason}");
    let (_, reason) = case("not_list.json", json!({"image_id": 1}));
    assert!(reason.contains("list"), "{reason}");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, b"[{").expect("write");
    assert!(matches!(
        read_predictions(&bad),
        Err(EvalError::Json { .. })
    ));
    assert!(matches!(
        read_references(dir.path().join("absent.json")),
        Err(EvalError::Io { .. })
    ));
}

#[test]
fn json_and_table_use_pycocoevalcaps_names() {
    let images = vec![TokenizedImage {
        image_id: ImageId::Str("x".into()),
        references: vec!["a dog runs".into(), "a dog is running".into()],
        candidate: "a dog runs".into(),
    }];
    let scores = score_tokenized(&images).expect("scores");
    let j = scores.to_json();
    for name in ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"] {
        assert!(j[name].is_f64(), "{name} in {j}");
    }
    assert_eq!(j["images"], 1);
    assert_eq!(scores.per_image_json()[0]["image_id"], "x");
    // An exact match of a reference: BLEU-1 and ROUGE-L are 1 (up to the smoothing).
    assert!((scores.bleu[0] - 1.0).abs() < 1e-6 && (scores.rouge_l - 1.0).abs() < 1e-12);
    let table = scores.table();
    assert!(
        table.contains("CIDEr") && table.contains("Bleu_4"),
        "{table}"
    );
}

/// A generated caption that is empty scores 0 on that image (no n-grams), the others as if it
/// were absent from their own scores; a predictions file with one is refused.
#[test]
fn an_empty_generated_caption_scores_zero_but_an_empty_file_caption_is_refused() {
    let refs = References {
        source: "refs".into(),
        images: vec![
            (
                ImageId::Int(1),
                vec!["a man riding a horse".into(), "a person on a horse".into()],
            ),
            (
                ImageId::Int(2),
                vec!["two dogs playing in the grass".into()],
            ),
        ],
    };
    let preds = Predictions {
        source: "preds".into(),
        entries: vec![
            Prediction {
                image_id: ImageId::Int(1),
                caption: "a man on a horse".into(),
            },
            Prediction {
                image_id: ImageId::Int(2),
                caption: "  ".into(),
            },
        ],
    };
    let err = cm3_eval::captions::evaluate(&preds, &refs).expect_err("empty caption");
    assert!(err.to_string().contains("image 2: empty caption"), "{err}");
    let s = cm3_eval::captions::evaluate_generated(&preds, &refs).expect("generated");
    assert!(s.values().iter().all(|v| v.is_finite()), "{:?}", s.values());
    let empty = &s.per_image[1];
    assert_eq!((empty.cider, empty.rouge_l), (0.0, 0.0));
    assert!(s.per_image[0].cider > 0.0);
}
