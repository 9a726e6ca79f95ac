//! `cm3 train --devices N` (issue 23): data parallelism over N devices of one backend. On this
//! machine the test runs flex replicas on the CPU, which exercises the whole path (the
//! step's micro-batches shared out, a replica per device in its own thread, gradients moved to
//! the first device and summed there): the losses of 2- and 3-device runs equal a 1-device run's
//! at the same global batch, within the tolerance of summing in another order: relative 1e-4, as
//! wgpu against flex (measured: equal for two steps, since Adam's first update is the gradient's
//! sign, then 1e-7 at step 4 growing to 2e-5 by step 6 at this learning rate, as Adam amplifies
//! the reordering in parameters whose gradients are near zero).
mod common;

use std::path::Path;

use cm3_train::{Backend, TrainConfig, TrainOptions, train};
use common::{SEQ_LEN, dataset, losses, tiny_config};

fn config() -> TrainConfig {
    let mut cfg = tiny_config(8, 8);
    // Four micro-batches of 2 × 64 tokens a step: two for each of two devices, 2/1/1 for three.
    cfg.batch_tokens = 4 * 2 * SEQ_LEN;
    cfg
}

fn run(out: &Path, ds: &Path, devices: usize) -> cm3_train::Result<cm3_train::TrainReport> {
    train(&TrainOptions {
        out: out.to_path_buf(),
        start: Some((ds.to_path_buf(), config())),
        init_from: None,
        stop_after: None,
        backend: Backend::Flex,
        devices,
        progress: false,
    })
}

#[test]
fn two_devices_give_one_devices_losses_at_the_same_global_batch() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ds = tmp.path().join("ds");
    dataset(&ds);
    run(&tmp.path().join("one"), &ds, 1).expect("one device");
    let one = losses(&tmp.path().join("one"));
    assert_eq!(one.len(), 8, "{one:?}");
    assert!(one[7].1 < one[0].1 - 0.2, "the loss did not fall: {one:?}");
    for n in [2, 3] {
        let out = tmp.path().join(format!("d{n}"));
        run(&out, &ds, n).unwrap_or_else(|e| panic!("{n} devices: {e}"));
        let many = losses(&out);
        assert_eq!(many.len(), one.len());
        for ((step, a), (s2, b)) in one.iter().zip(&many) {
            assert_eq!(step, s2);
            let rel = (a - b).abs() / a.abs().max(1e-12);
            eprintln!("step {step}: 1 device {a}, {n} devices {b} (relative {rel:e})");
            assert!(
                rel <= 1e-4,
                "{n} devices, step {step}: {a} against {b} (relative {rel:e})"
            );
        }
    }

    // More devices than micro-batches a step is refused before anything is trained.
    let err = run(&tmp.path().join("five"), &ds, 5)
        .expect_err("five devices, four micro-batches")
        .to_string();
    assert!(
        err.contains("5 devices") && err.contains("batch_tokens"),
        "{err}"
    );
    let err = run(&tmp.path().join("none"), &ds, 0)
        .expect_err("no device")
        .to_string();
    assert!(err.contains("at least 1"), "{err}");
}
