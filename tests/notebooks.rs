//! The notebooks run top to bottom, headless, on the embedded sample built by `cm3 build
//! --preset demo` and a tiny run trained on it (what the README's main command makes), with
//! the dataset and run given by CM3_DATASET and CM3_RUN. Jupyter comes from PyPI through
//! scripts/setup-notebooks.sh on first use.
mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;

#[test]
fn every_notebook_runs_on_the_sample() {
    runtime();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let setup = Command::new("bash")
        .arg(root.join("scripts/setup-notebooks.sh"))
        .output()
        .expect("run setup-notebooks.sh");
    assert!(setup.status.success(), "{}", stderr(&setup));
    let bin = String::from_utf8_lossy(&setup.stdout).trim().to_string();

    let tmp = tempfile::tempdir().expect("tmp");
    let ds = tmp.path().join("ds");
    // The demo preset, with a shorter image-tokenizer training to keep the test quick.
    let cfg = tmp.path().join("quick.toml");
    fs::write(&cfg, "[train_image]\nsteps = 20\n").expect("config");
    build_demo(&ds, &sample_dir(), &cfg);
    let run = tmp.path().join("run");
    run_ok(&[
        "train",
        "--data",
        &p(&ds),
        "--out",
        &p(&run),
        "--steps",
        "6",
        "--no-progress",
    ]);

    let out = tmp.path().join("executed");
    let mut names: Vec<_> = fs::read_dir(root.join("notebooks"))
        .expect("notebooks/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "ipynb"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 5, "{names:?}");
    // Run a notebook headless on a dataset, its output as `name`.ipynb in `out`.
    let execute = |nb: &Path, dataset: &Path, name: &str| {
        Command::new(Path::new(&bin).join("jupyter-nbconvert"))
            .args([
                "--to",
                "notebook",
                "--execute",
                "--output",
                name,
                "--output-dir",
            ])
            .arg(&out)
            .arg(nb)
            .env("CM3_DATASET", dataset)
            .env("CM3_RUN", &run)
            .env("CM3_BIN", env!("CARGO_BIN_EXE_cm3"))
            .current_dir(root.join("notebooks"))
            .output()
            .expect("run nbconvert")
    };
    for nb in names {
        let stem = nb.file_stem().expect("name").to_string_lossy().into_owned();
        let result = execute(&nb, &ds, &stem);
        assert!(
            result.status.success(),
            "{} failed:\n{}",
            nb.display(),
            stderr(&result)
        );
        // Every figure was drawn.
        let executed = fs::read_to_string(out.join(nb.file_name().expect("name"))).expect("output");
        assert!(
            executed.contains("image/png"),
            "{} drew no figure",
            nb.display()
        );
    }

    // The packed-data notebook reads SFT data too (the sample's images and captions as a
    // captioning task, in the run's vocabulary).
    let sft = tmp.path().join("sft");
    let task = format!("coco={}", p(&sample_dir()));
    run_ok(&[
        "sft",
        "build",
        &p(&sft),
        "--from",
        &p(&run),
        "--task",
        &task,
        "--no-progress",
    ]);
    let nb = root.join("notebooks/03_packed.ipynb");
    let result = execute(&nb, &sft, "03_packed_sft");
    assert!(
        result.status.success(),
        "03_packed on SFT data failed:\n{}",
        stderr(&result)
    );
    let executed = fs::read_to_string(out.join("03_packed_sft.ipynb")).expect("output");
    assert!(
        executed.contains("SFT tasks:") && executed.contains("image/png"),
        "{executed}"
    );
}
