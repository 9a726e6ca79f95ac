//! The text BPE on messy real text (5,000 LAION alt-texts): exact round trips, specials never
//! produced by text, and the saved tokenizer.json gives the same ids in Hugging Face's Python
//! `tokenizers` (the reference implementation others use to read our data).

use std::path::{Path, PathBuf};
use std::process::Command;

use cm3_core::vocab;
use cm3_tokenize::{TextTokenizer, TextTokenizerConfig};

fn captions() -> Vec<String> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/laion_captions_5000.jsonl");
    std::fs::read_to_string(&path)
        .expect("fixture")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            v["text"].as_str().expect("text").to_string()
        })
        .collect()
}

fn config() -> TextTokenizerConfig {
    TextTokenizerConfig {
        vocab_size: 4_000,
        min_frequency: 2,
        sentinels: 8,
    }
}

#[test]
fn round_trips_real_captions_it_was_not_trained_on() {
    let all = captions();
    assert_eq!(all.len(), 5_000);
    let (train, held_out) = all.split_at(4_000);
    let (tok, report) = TextTokenizer::train(train.iter(), &config()).expect("train");
    assert_eq!(report.texts, 4_000);
    assert_eq!(report.vocab_size, 4_000, "{report:?}");
    let specials = vocab::special_tokens(8).len() as u32;
    let mut tokens = 0usize;
    let mut bytes = 0usize;
    for text in held_out.iter().chain(train) {
        let ids = tok.encode(text).expect("encode");
        assert!(
            ids.iter().all(|&id| id >= specials && id < 4_000),
            "{text:?}"
        );
        assert_eq!(&tok.decode(&ids).expect("decode"), text);
        tokens += ids.len();
        bytes += text.len();
    }
    // A trained BPE compresses: well under one token per byte (bytes alone would be 1.0).
    let ratio = tokens as f64 / bytes as f64;
    assert!(ratio < 0.4, "{ratio:.3} tokens per byte");
    // Batched encoding is the same as one by one.
    let some: Vec<&str> = held_out.iter().take(50).map(String::as_str).collect();
    let batch = tok.encode_batch(&some).expect("batch");
    for (text, ids) in some.iter().zip(&batch) {
        assert_eq!(&tok.encode(text).expect("encode"), ids);
    }
}

#[test]
fn training_is_deterministic() {
    let all = captions();
    let (a, _) = TextTokenizer::train(all[..1_000].iter(), &config()).expect("a");
    let (b, _) = TextTokenizer::train(all[..1_000].iter(), &config()).expect("b");
    assert_eq!(a.sha256(), b.sha256());
}

fn python_tokenizers() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/setup-python-package.sh");
    let out = Command::new("bash")
        .arg(&script)
        .args(["tokenizers", "0.22.2"])
        .output()
        .expect("run setup script");
    assert!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).expect("utf8").trim())
}

#[test]
fn python_tokenizers_loads_the_file_and_gives_the_same_ids() {
    let all = captions();
    let (tok, _) = TextTokenizer::train(all[..4_000].iter(), &config()).expect("train");
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("tokenizer.json");
    tok.save(&path).expect("save");
    // Include captions that spell special tokens: Python must also keep them as text.
    let mut texts: Vec<String> = all.iter().step_by(7).cloned().collect();
    texts.push("a caption with <break> and <mask:0> inside".into());
    let texts_path = dir.path().join("texts.json");
    std::fs::write(&texts_path, serde_json::to_string(&texts).expect("json")).expect("write");
    let ours: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| tok.encode(t).expect("encode"))
        .collect();

    let script = r#"
import json, sys
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
tok.encode_special_tokens = True
texts = json.load(open(sys.argv[2]))
out = []
for t in texts:
    ids = tok.encode(t, add_special_tokens=False).ids
    assert tok.decode(ids, skip_special_tokens=False) == t, t
    out.append(ids)
print(json.dumps({"ids": out, "vocab": tok.get_vocab_size(with_added_tokens=True),
                  "break": tok.token_to_id("<break>")}))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&path)
        .arg(&texts_path)
        .env("PYTHONPATH", python_tokenizers())
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("python json");
    let theirs: Vec<Vec<u32>> = serde_json::from_value(v["ids"].clone()).expect("ids");
    assert_eq!(theirs.len(), ours.len());
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert_eq!(a, b, "text {i}: {:?}", texts[i]);
    }
    assert_eq!(v["vocab"], 4_000);
    assert_eq!(v["break"], tok.special(vocab::BREAK).expect("break"));
}
