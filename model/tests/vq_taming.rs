//! The GumbelVQ port against taming-transformers itself: a random-weight model of the released
//! `vqgan_gumbel_f8` structure, saved as a Lightning checkpoint by PyTorch, with the codes and
//! decoded pixels taming computes (fixtures/vqgan/, made by make_vqgan_fixture.py there).

mod common;

use std::path::Path;

use burn::tensor::Device;
use cm3_model::vq::{VqConfig, VqTokenizer};
use common::{npy, tensor4, values, vq_fixtures as fixtures};

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn tokenizer(device: &Device) -> VqTokenizer {
    let cfg = VqConfig::from_taming_yaml(&fixtures().join("config.yaml")).expect("config");
    VqTokenizer::load_taming(&fixtures().join("tiny_gumbel_f8.ckpt"), cfg, device).expect("load")
}

#[test]
fn codes_match_taming_exactly_and_pixels_within_tolerance() {
    let device = Device::flex();
    let tok = tokenizer(&device);
    assert_eq!(tok.config().factor(), 8);
    // Square (the training size) and non-square inputs: the same f8 shapes at other sizes.
    for size in ["32", "48x32"] {
        let x = tensor4(&format!("inputs_{size}.npy"), &device);
        let prequant = values(tok.prequant(x.clone()).expect("prequant"));
        let (want, _) = npy(&format!("prequant_{size}.npy"));
        let d = max_abs_diff(&prequant, &want);
        assert!(d < 5e-5, "{size}: prequant differs by {d:e}");
        eprintln!("{size}: prequant max |diff| {d:e}");

        let logits = values(tok.logits(x.clone()).expect("logits"));
        let (want, _) = npy(&format!("logits_{size}.npy"));
        let d = max_abs_diff(&logits, &want);
        assert!(d < 2e-4, "{size}: logits differ by {d:e}");
        eprintln!("{size}: logits max |diff| {d:e}");

        let (b, h, w) = {
            let [b, _, h, w] = x.dims();
            (b, h / 8, w / 8)
        };
        let pixels = x.into_data().try_into_vec_as::<f32>().expect("f32");
        let codes = tok.encode_pixels(pixels, b, h * 8, w * 8).expect("encode");
        let (want, shape) = npy(&format!("codes_{size}.npy"));
        assert_eq!(shape, vec![b, h, w]);
        let want: Vec<u32> = want.into_iter().map(|c| c as u32).collect();
        assert_eq!(codes, want, "{size}: codes");

        let decoded = values(tok.decode(&codes, b, h, w).expect("decode"));
        let (want, _) = npy(&format!("decoded_{size}.npy"));
        let d = max_abs_diff(&decoded, &want);
        assert!(d < 1e-4, "{size}: decoded pixels differ by {d:e}");
        eprintln!("{size}: decoded max |diff| {d:e}");
    }
}

#[test]
fn bad_checkpoints_configs_and_inputs_are_refused_with_reasons() {
    let device = Device::flex();
    let cfg = VqConfig::from_taming_yaml(&fixtures().join("config.yaml")).expect("config");

    // Another shape: the same checkpoint for a model with more codes.
    let mut other = cfg.clone();
    other.n_embed = 128;
    let e = VqTokenizer::load_taming(&fixtures().join("tiny_gumbel_f8.ckpt"), other, &device)
        .expect_err("shape");
    assert!(e.to_string().contains("quantize"), "{e}");

    // A model with one more residual block per level: its tensors are missing, listed by name.
    let mut deeper = cfg.clone();
    deeper.num_res_blocks = 3;
    let e = VqTokenizer::load_taming(&fixtures().join("tiny_gumbel_f8.ckpt"), deeper, &device)
        .expect_err("missing");
    let msg = e.to_string();
    assert!(msg.contains("84 model tensors are missing"), "{msg}");
    assert!(msg.contains("decoder.up.0.block.3.norm1.weight"), "{msg}");

    // A model with fewer blocks: the checkpoint has extra tensors, listed by name.
    let mut shallower = cfg.clone();
    shallower.num_res_blocks = 1;
    let e = VqTokenizer::load_taming(&fixtures().join("tiny_gumbel_f8.ckpt"), shallower, &device)
        .expect_err("extra");
    assert!(e.to_string().contains("not part of"), "{e}");

    let e = VqTokenizer::load_taming(Path::new("/nonexistent.ckpt"), cfg.clone(), &device)
        .expect_err("missing file");
    assert!(e.to_string().contains("no such file"), "{e}");

    let dir = tempfile::tempdir().expect("tmp");
    let junk = dir.path().join("junk.ckpt");
    std::fs::write(&junk, b"not a checkpoint").expect("write");
    let e = VqTokenizer::load_taming(&junk, cfg.clone(), &device).expect_err("junk");
    assert!(e.to_string().contains("junk.ckpt"), "{e}");

    let mut odd = cfg.clone();
    odd.embed_dim = 8;
    let e = VqTokenizer::new(odd, &device).expect_err("z != embed");
    assert!(e.to_string().contains("must equal embed_dim"), "{e}");

    let tok = VqTokenizer::new(cfg, &device).expect("random");
    let e = tok
        .encode_pixels(vec![0.0; 3 * 20 * 32], 1, 20, 32)
        .expect_err("size");
    assert!(e.to_string().contains("multiples of 8"), "{e}");
    let e = tok.decode(&[0, 1, 64, 2], 1, 2, 2).expect_err("code");
    assert!(e.to_string().contains("code 64 at position 2"), "{e}");
}

#[test]
fn the_same_checkpoint_described_at_256_gives_the_papers_token_grid() {
    let device = Device::flex();
    let cfg = VqConfig::from_taming_yaml(&fixtures().join("config_256.yaml")).expect("config");
    assert_eq!((cfg.resolution, cfg.grid()), (256, 32));
    let tok256 = VqTokenizer::load_taming(&fixtures().join("tiny_gumbel_f8.ckpt"), cfg, &device)
        .expect("load");
    // Attention sits at the last level in both descriptions: same model, same codes.
    let x = tensor4("inputs_32.npy", &device);
    let pixels = x.into_data().try_into_vec_as::<f32>().expect("f32");
    let (want, _) = npy("codes_32.npy");
    let want: Vec<u32> = want.into_iter().map(|c| c as u32).collect();
    assert_eq!(
        tok256.encode_pixels(pixels, 2, 32, 32).expect("encode"),
        want
    );
    // A 256² image: 1,024 codes, all in the codebook.
    let codes = tok256
        .encode_pixels(vec![0.25; 3 * 256 * 256], 1, 256, 256)
        .expect("256");
    assert_eq!(codes.len(), 1_024);
    assert!(codes.iter().all(|&c| c < 64));
}
