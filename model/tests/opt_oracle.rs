//! The decoder against Hugging Face transformers' `OPTForCausalLM` (the same architecture written
//! by others): logits within 1e-4 and the same loss, for an untied and a tied model. Fixtures made
//! by `fixtures/opt/make_opt_fixture.py` (torch 1.12.1, transformers 4.36.2).
mod common;

use std::path::Path;

use burn::tensor::{Device, Int, Tensor, TensorData};
use cm3_model::decoder::{Cm3Decoder, HfOptConfig};
use common::{check_logits_and_loss, expected, fixture, load_opt};

fn check(dir: &Path) {
    let device = Device::flex();
    let worst = check_logits_and_loss(dir, &device);
    let (model, cfg) = load_opt(dir, &device);
    let e = expected(dir);
    // Row by row.
    for (row, &want) in e.loss_per_row.iter().enumerate() {
        let [_, t] = e.shape;
        let one = Tensor::<2, Int>::from_data(
            TensorData::new(e.ids[row * t..(row + 1) * t].to_vec(), [1, t]),
            &device,
        );
        let got = model.score(&cfg, one, Some(0)).expect("score").loss;
        assert!(
            (got - f64::from(want)).abs() <= 1e-5,
            "row {row}: {got} vs {want}"
        );
    }
    println!("{}: max |Δlogits| = {worst:e}", dir.display());
}

#[test]
fn untied_opt_logits_and_loss_match_transformers() {
    check(&fixture(""));
}

#[test]
fn tied_opt_logits_and_loss_match_transformers() {
    check(&fixture("tied"));
}

#[test]
fn a_checkpoint_of_another_shape_or_tying_is_refused_with_names() {
    let device = Device::flex();
    let hf: HfOptConfig = serde_json::from_str(
        &std::fs::read_to_string(fixture("config.json")).expect("config.json"),
    )
    .expect("config");
    let mut cfg = hf.to_decoder("fixture").expect("config");
    // The untied file read as a tied model: lm_head.weight is left over.
    cfg.tie_embeddings = true;
    let err = Cm3Decoder::load(&fixture("model.safetensors"), &cfg, &device)
        .expect_err("an untied checkpoint loaded as tied")
        .to_string();
    assert!(
        err.contains("lm_head.weight") && err.contains("tie_embeddings"),
        "{err}"
    );
    // Another width.
    cfg.tie_embeddings = false;
    cfg.d_model = 32;
    cfg.n_heads = 4;
    let err = Cm3Decoder::load(&fixture("model.safetensors"), &cfg, &device)
        .expect_err("a misshapen checkpoint loaded")
        .to_string();
    assert!(err.contains("model.decoder"), "{err}");
    // Biases or LayerNorm parameters are not this architecture.
    let mut with_bias = hf.clone();
    with_bias.enable_bias = true;
    assert!(with_bias.to_decoder("x").is_err());
}

#[test]
fn a_saved_model_loads_back_identically() {
    let device = Device::flex();
    let mut cfg = cm3_model::decoder::DecoderConfig::preset("tiny").expect("tiny");
    cfg.vocab_size = 50;
    cfg.max_seq_len = 16;
    let model = Cm3Decoder::init(&cfg, 3, &device).expect("init");
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("model.safetensors");
    model.save(&path).expect("save");
    let back = Cm3Decoder::load(&path, &cfg, &device).expect("load");
    let ids = || {
        Tensor::<2, Int>::from_data(
            TensorData::new((0..16).map(|i| (i * 7) % 50).collect::<Vec<i64>>(), [1, 16]),
            &device,
        )
    };
    let a = model.forward(&cfg, ids()).expect("a").into_data();
    let b = back.forward(&cfg, ids()).expect("b").into_data();
    assert_eq!(a, b);
}
