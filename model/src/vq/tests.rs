//! The small tokenizer cm3 trains keeps colours; configs without `norm` mean taming's GroupNorm.

use burn::tensor::Device;
use cm3_core::rng::SplitMix64;

use super::config::{Norm, VqConfig};
use super::ema::EmaVq;
use super::{VqTokenizer, VqTrainConfig, VqTrainer};

/// Six well separated colours (primaries and secondaries): the test is about whether colour
/// passes at all, not about telling orange from red after a few steps.
const PALETTE: [[u8; 3]; 6] = [
    [220, 30, 30],
    [30, 170, 60],
    [30, 70, 220],
    [240, 220, 30],
    [30, 200, 220],
    [200, 40, 200],
];
const BACKGROUNDS: [[u8; 3]; 2] = [[255, 255, 255], [0, 0, 0]];

/// 16 × 16 images of two flat colours, as a shape on a background is: each 8 × 8 quadrant (one
/// code at f8) is either a palette colour (one per image) or the background (white or black).
/// NCHW in [-1, 1], and each quadrant's colour (0..6 the palette, 6 and 7 the backgrounds).
fn quadrants(n: usize, rng: &mut SplitMix64) -> (Vec<f32>, Vec<usize>) {
    let colours: Vec<[u8; 3]> = PALETTE.iter().chain(&BACKGROUNDS).copied().collect();
    let mut pixels = Vec::with_capacity(n * 3 * 256);
    let mut truth = Vec::with_capacity(n * 4);
    for _ in 0..n {
        let (colour, background) = (rng.below(6) as usize, 6 + rng.below(2) as usize);
        let shape = 1 + rng.below(15);
        let q: Vec<usize> = (0..4)
            .map(|i| {
                if shape >> i & 1 == 1 {
                    colour
                } else {
                    background
                }
            })
            .collect();
        let image: Vec<[u8; 3]> = (0..256)
            .map(|p| colours[q[(p / 16 / 8) * 2 + (p % 16) / 8]])
            .collect();
        for c in 0..3 {
            pixels.extend(image.iter().map(|px| f32::from(px[c]) / 127.5 - 1.0));
        }
        truth.extend(q);
    }
    (pixels, truth)
}

/// Share of the palette-coloured quadrants whose reconstructed mean colour is nearest to the
/// right one of the 8 colours.
fn flat_colour_accuracy(cfg: &VqTrainConfig) -> f64 {
    let mut trainer = VqTrainer::new(cfg.clone(), &Device::flex().autodiff()).expect("trainer");
    let mut rng = SplitMix64::new(3);
    for _ in 0..cfg.steps {
        let (batch, _) = quadrants(cfg.batch_size, &mut rng);
        trainer.step(batch, cfg.batch_size).expect("step");
    }
    let tok = trainer.finish(&Device::flex(), 16).expect("finish");
    let n = 16;
    let (pixels, truth) = quadrants(n, &mut SplitMix64::new(4));
    let codes = tok.encode_pixels(pixels, n, 16, 16).expect("encode");
    let out = tok.decode(&codes, n, 2, 2).expect("decode");
    let out = out.into_data().try_into_vec_as::<f32>().expect("pixels");
    let colours: Vec<[u8; 3]> = PALETTE.iter().chain(&BACKGROUNDS).copied().collect();
    let (mut right, mut total) = (0, 0);
    for (i, &want) in truth.iter().enumerate() {
        let (img, q) = (i / 4, i % 4);
        let mean: [f64; 3] = std::array::from_fn(|c| {
            let mut s = 0f64;
            for y in 0..8 {
                for x in 0..8 {
                    let (yy, xx) = ((q / 2) * 8 + y, (q % 2) * 8 + x);
                    s += f64::from(out[img * 768 + c * 256 + yy * 16 + xx]);
                }
            }
            (s / 64.0 + 1.0) * 127.5
        });
        let dist = |k: usize| {
            (0..3)
                .map(|c| (mean[c] - f64::from(colours[k][c])).powi(2))
                .sum::<f64>()
        };
        let best = (0..8)
            .min_by(|&a, &b| dist(a).total_cmp(&dist(b)))
            .expect("colours");
        if want < 6 {
            right += usize::from(best == want);
            total += 1;
        }
    }
    right as f64 / total as f64
}

/// A short training on two-colour images gives the colours back. With taming's GroupNorm on 32
/// channels (one channel a group) the same training gets about half of them (0.54 measured):
/// a flat region's colour does not pass the normalisation. The CPU backend's parallel float sums
/// are not bit-reproducible, so runs differ: on 2026-12-05 seven runs passed the earlier bound of
/// 0.9 (four alone, three beside the crate's other tests) and one, beside them, gave 0.72. The
/// bound is set between that and GroupNorm's 0.54 (chance is 1/8), so that the test says what it
/// checks, colour passing the tokenizer, without failing on the scheduling of threads.
#[test]
fn flat_colours_come_back_after_a_short_training() {
    let mut cfg = VqTrainConfig::default();
    // 32 code positions a batch: 64 codes keep the average use per code and step (0.5) of the
    // default's 128 positions and 256 codes, which the dead-code threshold is set for.
    cfg.model.resolution = 16;
    cfg.model.n_embed = 64;
    cfg.steps = 300;
    let acc = flat_colour_accuracy(&cfg);
    assert!(
        acc >= 0.65,
        "{acc} of the coloured quadrants came back right"
    );
}

#[test]
fn configs_without_norm_keep_taming_groupnorm_and_training_configs_get_layer() {
    let mut json = serde_json::to_value(VqConfig::gumbel_f8()).expect("json");
    assert_eq!(json["norm"], "group");
    json.as_object_mut().expect("object").remove("norm");
    let back: VqConfig = serde_json::from_value(json.clone()).expect("without norm");
    assert_eq!(back, VqConfig::gumbel_f8());

    let train = VqTrainConfig::default();
    assert_eq!(train.model.norm, Norm::Layer);
    train.validate().expect("the default validates");
    // A training config's model table without `norm`: what cm3 trains.
    let mut model = serde_json::to_value(&train.model).expect("json");
    model.as_object_mut().expect("object").remove("norm");
    let t: VqTrainConfig =
        serde_json::from_value(serde_json::json!({ "model": model.clone(), "steps": 5 }))
            .expect("train config");
    assert_eq!((t.model.norm, t.steps), (Norm::Layer, 5));
    assert_eq!(t.model, train.model);
    // GroupNorm asked for: 16 channels cannot make its 32 groups.
    model["norm"] = "group".into();
    let t: VqTrainConfig =
        serde_json::from_value(serde_json::json!({ "model": model })).expect("train config");
    assert_eq!(t.model.norm, Norm::Group);
    let e = t.validate().expect_err("16 channels");
    assert!(e.to_string().contains("32 groups"), "{e}");
    assert_eq!(
        serde_json::from_value::<VqTrainConfig>(serde_json::to_value(&train).expect("json"))
            .expect("round trip"),
        train
    );
}

/// A tokenizer saved before `norm` existed (its config.json has none) loads as it was trained,
/// with taming's GroupNorm, and decodes exactly as before; read as the other norm it would not.
#[test]
fn a_saved_tokenizer_without_norm_decodes_as_before() {
    let cfg = VqConfig {
        ch: 32,
        ch_mult: vec![1, 2],
        num_res_blocks: 1,
        attn_resolutions: vec![],
        resolution: 16,
        in_channels: 3,
        out_ch: 3,
        z_channels: 8,
        embed_dim: 8,
        n_embed: 16,
        norm: Norm::Group,
    };
    let device = Device::flex();
    let tok = VqTokenizer::from_ema(EmaVq::new(&cfg, &device), cfg, 16, &device).expect("tok");
    let dir = tempfile::tempdir().expect("tmp");
    tok.save(dir.path()).expect("save");
    let path = dir.path().join("config.json");
    let mut saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
    saved["model"]
        .as_object_mut()
        .expect("model")
        .remove("norm");
    std::fs::write(&path, saved.to_string()).expect("write");

    let codes: Vec<u32> = (0..2 * 8 * 8).map(|i| (i * 7 % 16) as u32).collect();
    let decode = |t: &VqTokenizer| {
        t.decode(&codes, 2, 8, 8)
            .expect("decode")
            .into_data()
            .try_into_vec_as::<f32>()
            .expect("pixels")
    };
    let before = decode(&tok);
    let old = VqTokenizer::load_saved(dir.path(), &device).expect("load");
    assert_eq!(old.config().norm, Norm::Group);
    assert_eq!(decode(&old), before);

    saved["model"]["norm"] = "layer".into();
    std::fs::write(&path, saved.to_string()).expect("write");
    let other = VqTokenizer::load_saved(dir.path(), &device).expect("load");
    assert_ne!(decode(&other), before);
}

/// Saving over a tokenizer replaces each file whole: a reader that opened the old `config.json`
/// reads the old one complete (not a file truncated and rewritten under it), the new pair loads,
/// and no temporary file is left behind.
#[test]
fn saving_over_a_tokenizer_replaces_its_files_whole() {
    use std::io::Read;
    let cfg = |n_embed| VqConfig {
        ch: 32,
        ch_mult: vec![1, 2],
        num_res_blocks: 1,
        attn_resolutions: vec![],
        resolution: 16,
        in_channels: 3,
        out_ch: 3,
        z_channels: 8,
        embed_dim: 8,
        n_embed,
        norm: Norm::Group,
    };
    let device = Device::flex();
    let save = |n_embed, dir: &std::path::Path| {
        VqTokenizer::from_ema(
            EmaVq::new(&cfg(n_embed), &device),
            cfg(n_embed),
            16,
            &device,
        )
        .expect("tok")
        .save(dir)
        .expect("save");
    };
    let dir = tempfile::tempdir().expect("tmp");
    save(16, dir.path());
    let config = dir.path().join("config.json");
    let old_text = std::fs::read_to_string(&config).expect("read");
    let mut reader = std::fs::File::open(&config).expect("open");
    save(32, dir.path());
    let mut seen = String::new();
    reader.read_to_string(&mut seen).expect("read");
    assert_eq!(seen, old_text, "config.json was rewritten in place");
    let loaded = VqTokenizer::load_saved(dir.path(), &device).expect("load");
    assert_eq!(loaded.config().n_embed, 32);
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["config.json", "model.safetensors"]);
}
