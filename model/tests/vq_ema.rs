//! The EMA-codebook tokenizer cm3 trains: a few steps on a smooth synthetic image set, saved as
//! safetensors and loaded back, tokenises and decodes exactly as before (encode → decode is
//! deterministic), and bad saved files are refused with reasons.

use burn::tensor::Device;
use cm3_model::vq::{VqTokenizer, VqTrainConfig, VqTrainer};

mod common;

fn config() -> VqTrainConfig {
    common::tiny_vq_train_config(4, 2)
}

/// `n` 16 × 16 images of soft colour gradients, NCHW in [-1, 1].
fn images(n: usize, side: usize) -> Vec<f32> {
    common::soft_images(n, side, 0)
}

#[test]
fn a_trained_tokenizer_round_trips_through_its_files() {
    let cfg = config();
    let mut trainer = VqTrainer::new(cfg.clone(), &Device::flex().autodiff()).expect("trainer");
    for _ in 0..cfg.steps {
        let s = trainer.step(images(2, 16), 2).expect("step");
        assert!(s.loss.is_finite() && s.perplexity >= 1.0, "{s:?}");
    }
    let device = Device::flex();
    // It tokenises 32² images, twice the crops it saw: the model is convolutional.
    let tok = trainer.finish(&device, 32).expect("finish");
    let pixels = images(3, 32);
    let codes = tok
        .encode_pixels(pixels.clone(), 3, 32, 32)
        .expect("encode");
    assert_eq!(codes.len(), 3 * 4 * 4);
    assert!(codes.iter().all(|&c| c < 16));
    assert_eq!(
        tok.encode_pixels(pixels.clone(), 3, 32, 32).expect("again"),
        codes
    );

    let dir = tempfile::tempdir().expect("tmp");
    tok.save(dir.path()).expect("save");
    let back = VqTokenizer::load_saved(dir.path(), &device).expect("load");
    assert_eq!(back.image_size(), 32);
    assert_eq!(
        back.encode_pixels(pixels, 3, 32, 32).expect("loaded"),
        codes
    );
    let a = tok.decode(&codes, 3, 4, 4).expect("decode");
    let b = back.decode(&codes, 3, 4, 4).expect("decode");
    let a = a.into_data().try_into_vec_as::<f32>().expect("a");
    let b = b.into_data().try_into_vec_as::<f32>().expect("b");
    assert_eq!(a, b);

    // A saved file from another configuration: missing tensors, listed.
    let mut other: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("config.json")).expect("config"),
    )
    .expect("json");
    other["model"]["num_res_blocks"] = 2.into();
    std::fs::write(dir.path().join("config.json"), other.to_string()).expect("write");
    let e = VqTokenizer::load_saved(dir.path(), &device).expect_err("missing");
    assert!(
        e.to_string().contains("missing") && e.to_string().contains("decoder.up.0.block.2"),
        "{e}"
    );
    std::fs::write(dir.path().join("config.json"), "{\"kind\": \"gan\"}").expect("write");
    let e = VqTokenizer::load_saved(dir.path(), &device).expect_err("junk");
    assert!(e.to_string().contains("config.json"), "{e}");
}
