//! Fixture readers shared by the oracle tests (each test binary uses some of them).
#![allow(dead_code)]
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use cm3_model::decoder::{Cm3Decoder, DecoderConfig, HfOptConfig};
use safetensors::SafeTensors;

pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/opt")
        .join(rel)
}

pub struct Expected {
    pub ids: Vec<i64>,
    pub shape: [usize; 2],
    pub logits: Vec<f32>,
    pub loss: f32,
    pub loss_per_row: Vec<f32>,
}

pub fn f32s(st: &SafeTensors, name: &str) -> Vec<f32> {
    let t = st.tensor(name).expect(name);
    t.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

pub fn expected(dir: &Path) -> Expected {
    let bytes = std::fs::read(dir.join("expected.safetensors")).expect("expected.safetensors");
    let st = SafeTensors::deserialize(&bytes).expect("safetensors");
    let ids_t = st.tensor("input_ids").expect("input_ids");
    let shape = [ids_t.shape()[0], ids_t.shape()[1]];
    let ids = ids_t
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    Expected {
        ids,
        shape,
        logits: f32s(&st, "logits"),
        loss: f32s(&st, "loss")[0],
        loss_per_row: f32s(&st, "loss_per_row"),
    }
}

pub fn vq_fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vqgan")
}

/// A little-endian .npy array (float32 or int64) as f64 values and its shape.
pub fn npy(name: &str) -> (Vec<f64>, Vec<usize>) {
    let bytes = std::fs::read(vq_fixtures().join(name)).expect("fixture");
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{name}");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).expect("header");
    let shape: Vec<usize> = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .expect("shape")
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().expect("dim"))
        .collect();
    assert!(header.contains("'fortran_order': False"), "{name}");
    let data = &bytes[10 + header_len..];
    let values = if header.contains("'<f4'") {
        data.chunks_exact(4)
            .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect()
    } else if header.contains("'<i8'") {
        data.chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as f64)
            .collect()
    } else {
        panic!("{name}: unexpected dtype in {header}");
    };
    (values, shape)
}

pub fn tensor4(name: &str, device: &Device) -> Tensor<4> {
    let (v, s) = npy(name);
    let v: Vec<f32> = v.into_iter().map(|x| x as f32).collect();
    Tensor::from_data(TensorData::new(v, [s[0], s[1], s[2], s[3]]), device)
}

pub fn values(t: Tensor<4>) -> Vec<f64> {
    t.into_data()
        .try_into_vec_as::<f32>()
        .expect("f32")
        .into_iter()
        .map(f64::from)
        .collect()
}

/// The OPT fixture in `dir` loaded on `device`.
pub fn load_opt(dir: &Path, device: &Device) -> (Cm3Decoder, DecoderConfig) {
    let hf: HfOptConfig = serde_json::from_str(
        &std::fs::read_to_string(dir.join("config.json")).expect("config.json"),
    )
    .expect("an OPT config");
    let cfg = hf.to_decoder("fixture").expect("a supported OPT");
    let model = Cm3Decoder::load(&dir.join("model.safetensors"), &cfg, device).expect("load");
    (model, cfg)
}

/// The fixture's ids as a tensor on `device`.
pub fn fixture_ids(e: &Expected, device: &Device) -> Tensor<2, Int> {
    Tensor::<2, Int>::from_data(TensorData::new(e.ids.clone(), e.shape), device)
}

/// Logits within 1e-4 of transformers' and the loss over every non-padding target (id 0, as
/// `labels=` with -100 there) within 1e-5; the largest logit difference.
pub fn check_logits_and_loss(dir: &Path, device: &Device) -> f32 {
    let (model, cfg) = load_opt(dir, device);
    let e = expected(dir);
    let logits = model
        .forward(&cfg, fixture_ids(&e, device))
        .expect("forward")
        .into_data()
        .try_into_vec_as::<f32>()
        .expect("logits");
    assert_eq!(logits.len(), e.logits.len());
    let worst = logits
        .iter()
        .zip(&e.logits)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst <= 1e-4, "{}: max |Δlogits| = {worst}", dir.display());
    let score = model
        .score(&cfg, fixture_ids(&e, device), Some(0))
        .expect("score");
    assert!(
        (score.loss - f64::from(e.loss)).abs() <= 1e-5,
        "{}: loss {} against {}",
        dir.display(),
        score.loss,
        e.loss
    );
    assert_eq!(score.tokens, 39 + 39 + 29);
    worst
}

/// A small VQ training configuration for tests: 16² crops, 16 codes of 8, `steps` steps of
/// `batch` crops.
pub fn tiny_vq_train_config(steps: usize, batch: usize) -> cm3_model::vq::VqTrainConfig {
    use cm3_model::vq::{Norm, VqConfig, VqTrainConfig};
    VqTrainConfig {
        model: VqConfig {
            ch: 32,
            ch_mult: vec![1, 1, 2, 2],
            num_res_blocks: 1,
            attn_resolutions: vec![],
            resolution: 16,
            in_channels: 3,
            out_ch: 3,
            z_channels: 8,
            embed_dim: 8,
            n_embed: 16,
            norm: Norm::Layer,
        },
        steps,
        batch_size: batch,
        ..VqTrainConfig::default()
    }
}

/// `n` `side` × `side` images of soft colour gradients, NCHW in [-1, 1]; `offset` shifts the
/// set (another offset, other images).
pub fn soft_images(n: usize, side: usize, offset: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(n * 3 * side * side);
    for i in 0..n {
        for c in 0..3 {
            for y in 0..side {
                for x in 0..side {
                    let t = (x + 2 * y + 5 * (i + offset) + 7 * c) as f32 / (3 * side) as f32;
                    out.push((t * 6.0).sin() * 0.8);
                }
            }
        }
    }
    out
}
