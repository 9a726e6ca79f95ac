//! Training on Burn's wgpu runtime against `flex` (issue 23): the same steps give the same losses,
//! and a run continues on the other backend from a checkpoint. Runs on any Vulkan device, in CI
//! on Mesa's lavapipe. Without a device the test says why and returns, unless
//! `CM3_REQUIRE_WGPU=1` (set by `.ci/run` after installing the driver), when it fails.
#![cfg(feature = "wgpu")]
use std::path::Path;

mod common;

use cm3_train::{Backend, TrainConfig, TrainOptions, train};
use common::{dataset, losses, tiny_config};

fn config() -> TrainConfig {
    tiny_config(12, 6)
}

/// Training into `out`: a new run of `start` (the dataset and its config) or the run there.
fn try_run(
    out: &Path,
    start: Option<(&Path, TrainConfig)>,
    stop_after: Option<u64>,
    backend: Backend,
) -> cm3_train::Result<cm3_train::TrainReport> {
    train(&TrainOptions {
        out: out.to_path_buf(),
        start: start.map(|(ds, cfg)| (ds.to_path_buf(), cfg)),
        init_from: None,
        stop_after,
        backend,
        devices: 1,
        progress: false,
    })
}

fn run(out: &Path, start: Option<&Path>, stop_after: Option<u64>, backend: Backend) {
    try_run(out, start.map(|ds| (ds, config())), stop_after, backend)
        .unwrap_or_else(|e| panic!("training on {backend:?} in {}: {e}", out.display()));
}

/// Whether the wgpu device is there; if not, why, printed (a failure when it is required).
fn wgpu_present(test: &str) -> bool {
    match Backend::Wgpu.device() {
        Ok(_) => true,
        Err(e) if std::env::var_os("CM3_REQUIRE_WGPU").is_some() => {
            panic!("{test}: CM3_REQUIRE_WGPU is set and {e}")
        }
        Err(e) => {
            eprintln!("{test}: SKIPPED, {e}");
            false
        }
    }
}

fn assert_close(a: &[(u64, f64)], b: &[(u64, f64)], what: &str) {
    assert_eq!(
        a.iter().map(|x| x.0).collect::<Vec<_>>(),
        b.iter().map(|x| x.0).collect::<Vec<_>>(),
        "{what}: steps"
    );
    for ((step, x), (_, y)) in a.iter().zip(b) {
        // Sums run in another order on the GPU kernels: relative 1e-4.
        let rel = (x - y).abs() / y.abs().max(1e-12);
        assert!(
            rel <= 1e-4,
            "{what}: step {step}: {x} against {y} (relative {rel:e})"
        );
        eprintln!("{what}: step {step}: {x} against {y} (relative {rel:e})");
    }
}

#[test]
fn training_on_wgpu_matches_flex_and_resumes_across_backends() {
    if !wgpu_present("training_on_wgpu_matches_flex_and_resumes_across_backends") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let ds = tmp.path().join("ds");
    dataset(&ds);
    let flex = tmp.path().join("flex");
    run(&flex, Some(&ds), None, Backend::Flex);
    let wgpu = tmp.path().join("wgpu");
    run(&wgpu, Some(&ds), None, Backend::Wgpu);
    let want = losses(&flex);
    assert_eq!(want.len(), 12, "{want:?}");
    // The updates matter: a backend that skipped or botched one would be far off the next loss.
    assert!(
        want[11].1 < want[0].1 - 0.2,
        "the loss did not fall: {want:?}"
    );
    assert_close(&losses(&wgpu), &want, "wgpu against flex");
    // Six steps on each backend, both ways: the checkpoint (weights, optimiser, data position)
    // carries over.
    for (first, then, name) in [
        (Backend::Wgpu, Backend::Flex, "wgpu then flex"),
        (Backend::Flex, Backend::Wgpu, "flex then wgpu"),
    ] {
        let out = tmp.path().join(name.replace(' ', "-"));
        run(&out, Some(&ds), Some(6), first);
        run(&out, None, None, then);
        assert_close(&losses(&out), &want, name);
    }
}

/// A model the device cannot hold ends the run with an error naming the read that found it, not
/// a panic (Burn's reads panic): each of the feed-forward's two matrices (512 × 140,000 floats,
/// 287 MB) is over lavapipe's largest buffer. Nothing is saved.
#[test]
fn a_model_too_large_for_the_device_is_an_error_not_a_panic() {
    let test = "a_model_too_large_for_the_device_is_an_error_not_a_panic";
    if !wgpu_present(test) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let ds = tmp.path().join("ds");
    dataset(&ds);
    let mut cfg = tiny_config(1, 1);
    cfg.model.n_layers = 1;
    cfg.model.d_model = 512;
    cfg.model.ffn_dim = 140_000;
    let out = tmp.path().join("run");
    let got = try_run(&out, Some((&ds, cfg)), None, Backend::Wgpu);
    match got {
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains(": the device failed the work (out of its memory"),
                "{msg}"
            );
            let logged = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap_or_default();
            assert!(
                !logged.contains("\"loss\""),
                "a failed step was logged: {logged}"
            );
            let saved: Vec<String> = walk(&out);
            eprintln!("{test}: {msg:.60}...; the run holds {saved:?}");
            assert!(
                !saved.iter().any(|n| n.contains("step-")),
                "a checkpoint was saved: {saved:?}"
            );
        }
        Ok(_) if std::env::var_os("CM3_REQUIRE_WGPU").is_some() => {
            panic!("{test}: the device trained the model; lavapipe cannot hold it")
        }
        Ok(_) => eprintln!("{test}: SKIPPED, this device holds the model"),
    }
}

/// Every path under `dir`, relative to it.
fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap_or(&p).display().to_string());
            if p.is_dir() {
                todo.push(p);
            }
        }
    }
    out.sort();
    out
}
