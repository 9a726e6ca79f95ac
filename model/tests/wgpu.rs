//! The models on Burn's wgpu runtime against `flex` and the oracles (issue 23): the decoder's
//! logits and loss on the OPT fixture (transformers' numbers) and its gradients against flex's;
//! the VQ tokenizer's codes on the taming fixture. Runs on any Vulkan device, in CI on Mesa's
//! lavapipe (a CPU Vulkan driver). Without a device the tests say why and return, unless
//! `CM3_REQUIRE_WGPU=1` (set by `.ci/run` after installing the driver), when they fail.
#![cfg(feature = "wgpu")]
mod common;

use burn::module::Param;
use burn::tensor::{Device, Tensor};
use cm3_model::vq::{VqConfig, VqTokenizer, VqTrainer};
use common::{
    check_logits_and_loss, expected, fixture, fixture_ids, load_opt, npy, soft_images, tensor4,
    tiny_vq_train_config, values, vq_fixtures,
};

/// The wgpu device, or `None` with the reason printed (a failure if a device is required).
fn wgpu_or_skip(test: &str) -> Option<Device> {
    match cm3_model::device::wgpu() {
        Ok(d) => Some(d),
        Err(e) if std::env::var_os("CM3_REQUIRE_WGPU").is_some() => {
            panic!("{test}: CM3_REQUIRE_WGPU is set and {e}")
        }
        Err(e) => {
            eprintln!("{test}: SKIPPED, no wgpu device: {e}");
            None
        }
    }
}

fn f32s<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().expect("f32")
}

/// Largest |a - b| over the largest |b| (1 at least).
fn relative_gap(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().map(|x| x.abs()).fold(1.0, f32::max);
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
        / scale
}

/// The loss's gradients with respect to every kind of weight the decoder has.
fn gradients(dir: &std::path::Path, device: &Device) -> (f32, Vec<(&'static str, Vec<f32>)>) {
    let device = device.clone().autodiff();
    let (model, cfg) = load_opt(dir, &device);
    let e = expected(dir);
    let (loss, _) = model
        .loss(&cfg, fixture_ids(&e, &device), Some(0))
        .expect("loss");
    let value = f32s(loss.clone().detach())[0];
    let grads = loss.backward();
    let layer = &model.model.decoder.layers[0];
    let weights: [(&'static str, &Param<Tensor<2>>); 6] = [
        ("embed_tokens", &model.model.decoder.embed_tokens.weight),
        (
            "embed_positions",
            &model.model.decoder.embed_positions.weight,
        ),
        ("q_proj", &layer.self_attn.q_proj.weight),
        ("out_proj", &layer.self_attn.out_proj.weight),
        ("fc1", &layer.fc1.weight),
        ("fc2", &layer.fc2.weight),
    ];
    let g = weights
        .into_iter()
        .map(|(name, p)| {
            let grad = p
                .val()
                .grad(&grads)
                .unwrap_or_else(|| panic!("no gradient for {name}"));
            (name, f32s(grad))
        })
        .collect();
    (value, g)
}

#[test]
fn decoder_on_wgpu_matches_transformers_and_flex_gradients() {
    let Some(device) = wgpu_or_skip("decoder_on_wgpu_matches_transformers_and_flex_gradients")
    else {
        return;
    };
    for dir in [fixture(""), fixture("tied")] {
        let worst = check_logits_and_loss(&dir, &device);
        let (loss_flex, flex) = gradients(&dir, &Device::flex());
        let (loss_wgpu, wgpu) = gradients(&dir, &device);
        assert!(
            (loss_flex - loss_wgpu).abs() <= 1e-5,
            "{loss_flex} vs {loss_wgpu}"
        );
        for ((name, a), (_, b)) in wgpu.iter().zip(&flex) {
            let gap = relative_gap(a, b);
            // Sums run in another order on the GPU kernels; relative to the largest gradient.
            assert!(
                gap <= 1e-4,
                "{}: {name} gradient differs by {gap:e} (relative)",
                dir.display()
            );
            eprintln!("{}: {name} gradient, wgpu vs flex: {gap:e}", dir.display());
        }
        eprintln!(
            "{}: logits on wgpu within {worst:e} of transformers",
            dir.display()
        );
    }
}

#[test]
fn vq_tokenizer_on_wgpu_gives_tamings_codes() {
    let Some(device) = wgpu_or_skip("vq_tokenizer_on_wgpu_gives_tamings_codes") else {
        return;
    };
    let cfg = VqConfig::from_taming_yaml(&vq_fixtures().join("config.yaml")).expect("config");
    let tok = VqTokenizer::load_taming(&vq_fixtures().join("tiny_gumbel_f8.ckpt"), cfg, &device)
        .expect("load");
    for size in ["32", "48x32"] {
        let x = tensor4(&format!("inputs_{size}.npy"), &device);
        let [b, _, h, w] = x.dims();
        let pixels = x.into_data().try_into_vec_as::<f32>().expect("f32");
        let codes = tok.encode_pixels(pixels, b, h, w).expect("encode");
        let (want, _) = npy(&format!("codes_{size}.npy"));
        let want: Vec<u32> = want.into_iter().map(|c| c as u32).collect();
        assert_eq!(codes, want, "{size}: codes on wgpu");
        let decoded = values(tok.decode(&codes, b, h / 8, w / 8).expect("decode"));
        let (want, _) = npy(&format!("decoded_{size}.npy"));
        let worst = decoded
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(
            worst < 1e-4,
            "{size}: decoded pixels on wgpu differ by {worst:e}"
        );
    }
}

/// `cm3 tokenizer train-image --backend wgpu`'s trainer: on wgpu the held-out reconstruction
/// error falls as it trains, and the trained tokenizer, saved and loaded on flex, gives the codes
/// it gives on wgpu. (Random initialisation differs between backends, so step-by-step losses are
/// not compared with flex's; the decoder's gradients are, above.)
#[test]
fn vq_training_on_wgpu_learns_and_its_tokenizer_runs_on_flex() {
    let Some(device) = wgpu_or_skip("vq_training_on_wgpu_learns_and_its_tokenizer_runs_on_flex")
    else {
        return;
    };
    let cfg = tiny_vq_train_config(40, 4);
    let images = |n: usize, offset: usize| soft_images(n, 16, offset);
    let mut trainer = VqTrainer::new(cfg.clone(), &device.clone().autodiff()).expect("trainer");
    let held = images(4, 100);
    let mut first = None;
    for step in 0..cfg.steps {
        let s = trainer.step(images(4, step * 4), 4).expect("step on wgpu");
        assert!(s.loss.is_finite(), "step {step}: {s:?}");
        if step == 0 {
            first = Some(trainer.evaluate(held.clone(), 4).expect("evaluate"));
        }
    }
    let first = first.expect("one step");
    let last = trainer.evaluate(held, 4).expect("evaluate");
    assert!(last < 0.8 * first, "held-out MSE on wgpu {first} -> {last}");

    let tok = trainer.finish(&device, 16).expect("finish");
    let dir = tempfile::tempdir().expect("tmp");
    tok.save(dir.path()).expect("save");
    let on_flex = VqTokenizer::load_saved(dir.path(), &Device::flex()).expect("load on flex");
    let pixels = images(6, 50);
    let a = tok
        .encode_pixels(pixels.clone(), 6, 16, 16)
        .expect("encode on wgpu");
    let b = on_flex
        .encode_pixels(pixels, 6, 16, 16)
        .expect("encode on flex");
    let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
    // Float sums in another order may flip a near tie between two codes, rarely.
    assert!(
        same * 100 >= a.len() * 95,
        "{same} of {} codes agree between wgpu and flex",
        a.len()
    );
}

/// A device that fails the work is an error at the read, naming the operation, not a panic
/// (Burn's `into_data` panics there). The tensor, 256 MiB, is over lavapipe's largest buffer; a
/// device that holds it has nothing to fail here, which only a required device (CI's lavapipe)
/// makes a failure.
#[test]
fn a_failed_device_read_is_an_error_not_a_panic() {
    let test = "a_failed_device_read_is_an_error_not_a_panic";
    let Some(device) = wgpu_or_skip(test) else {
        return;
    };
    let big = Tensor::<1>::ones([1 << 26], &device).mul_scalar(2.0);
    match cm3_model::read_f32(big, "doubling") {
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.starts_with("doubling: the device failed the work"),
                "{msg}"
            );
        }
        Ok(v) if std::env::var_os("CM3_REQUIRE_WGPU").is_some() => {
            panic!(
                "{test}: the device held {} values; lavapipe does not",
                v.len()
            )
        }
        Ok(_) => eprintln!("{test}: SKIPPED, this device holds the tensor"),
    }
}
