//! End-to-end tests of `cm3 build`: the demo preset on the repository's sample, incremental
//! re-runs that leave the old sequences byte-identical, a settings file, bad input, and builds
//! killed at several points and re-run to the same output as an uninterrupted build.
mod common;

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use cm3_core::vocab::VocabLayout;
use cm3_pack::megatron::IndexedDataset;
use common::*;

fn build(ds: &Path, input: Option<&Path>, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["build".to_string(), p(ds), "--json".into()];
    if let Some(input) = input {
        args.extend(["--input".into(), p(input)]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    serde_json::from_slice(&run_ok(&args).stdout).expect("build report")
}

fn stage<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .find(|s| s["stage"] == name)
        .unwrap_or_else(|| panic!("no stage {name} in {report}"))
}

fn packed(ds: &Path, f: &str) -> Vec<u8> {
    fs::read(ds.join("packed").join(f)).unwrap_or_else(|e| panic!("packed/{f}: {e}"))
}

#[test]
fn demo_build_then_more_pairs_packs_only_the_new_ones() {
    runtime();
    let tmp = tempfile::tempdir().expect("tmp");
    let (first, second) = (tmp.path().join("first"), tmp.path().join("second"));
    sample_part(&first, 0..20);
    sample_part(&second, 20..32);
    let ds = tmp.path().join("ds");

    // A dataset that does not exist yet, without sources: a clear error.
    let err = run_err(&["build", &p(&ds), "--preset", "demo"]);
    assert!(
        err.contains("--input") && err.contains(&p(&ds)),
        "unhelpful error: {err}"
    );

    let r1 = build(&ds, Some(&first), &["--preset", "demo"]);
    let names: Vec<&str> = r1["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|s| s["stage"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        [
            "ingest",
            "embed",
            "index",
            "augment",
            "train-text",
            "train-image",
            "tokenize",
            "pack"
        ]
    );
    assert_eq!(stage(&r1, "ingest")["report"]["rows"], 20);
    assert_eq!(stage(&r1, "tokenize")["report"]["rows"], 20);
    assert!(stage(&r1, "train-image")["report"]["steps"] == 400);
    // The settings were saved beside the outputs; the demo's short sequences are in meta.json.
    let saved: serde_json::Value =
        serde_json::from_slice(&fs::read(ds.join("build.json")).expect("build.json"))
            .expect("json");
    assert_eq!(saved["preset"], "demo");
    assert_eq!(saved["config"]["pack"]["seq_len"], 1024);
    let meta: serde_json::Value = serde_json::from_slice(&packed(&ds, "meta.json")).expect("meta");
    assert_eq!(meta["seq_len"], 1024);
    let layout = VocabLayout::load(&ds.join("tokenizer/vocab.json")).expect("vocab");
    assert!(
        layout.text.size <= 2048,
        "the demo's text vocabulary: {layout:?}"
    );
    // 128-pixel images through an f8 tokenizer: 16 × 16 codes.
    let tokens = read_tokens(&ds);
    assert!(tokens.iter().all(|t| t.image.len() == 256));
    let train = IndexedDataset::read(&ds.join("packed/train")).expect("train");
    assert!(!train.lengths.is_empty());
    assert!(train.lengths.iter().all(|&l| l == 1024));
    assert!(
        train
            .tokens
            .iter()
            .all(|&t| t >= 0 && (t as u32) < layout.size)
    );

    // New sources: only they go through the stages; the tokenizers are kept, the old sequences
    // stay byte-identical.
    let text_tok = fs::read(ds.join("tokenizer/text/tokenizer.json")).expect("text tokenizer");
    let image_tok = fs::read(ds.join("tokenizer/image/model.safetensors")).expect("image tok");
    let (bin, idx) = (packed(&ds, "train.bin"), packed(&ds, "train.idx"));
    let r2 = build(&ds, Some(&second), &["--preset", "demo"]);
    assert_eq!(stage(&r2, "ingest")["report"]["rows"], 12);
    assert_eq!(stage(&r2, "embed")["report"]["rows"], 12);
    assert_eq!(stage(&r2, "tokenize")["report"]["rows"], 12);
    assert_eq!(stage(&r2, "pack")["report"]["shards_skipped"], 1);
    assert!(stage(&r2, "train-text")["report"].is_null());
    assert!(stage(&r2, "train-image")["report"].is_null());
    assert_eq!(
        fs::read(ds.join("tokenizer/text/tokenizer.json")).expect("t"),
        text_tok
    );
    assert_eq!(
        fs::read(ds.join("tokenizer/image/model.safetensors")).expect("i"),
        image_tok
    );
    let bin2 = packed(&ds, "train.bin");
    assert!(bin2.len() > bin.len(), "no new training sequences");
    assert_eq!(&bin2[..bin.len()], &bin[..]);
    let train2 = IndexedDataset::read(&ds.join("packed/train")).expect("train");
    assert!(train2.lengths.len() > train.lengths.len());
    for i in 0..train.lengths.len() {
        assert_eq!(train2.sequence(i), train.sequence(i));
    }
    assert_ne!(packed(&ds, "train.idx"), idx);

    // Nothing new: nothing changes.
    let r3 = build(&ds, None, &["--preset", "demo"]);
    assert_eq!(stage(&r3, "pack")["report"]["shards_written"], 0);
    assert_eq!(packed(&ds, "train.bin"), bin2);

    // Another setting for a stage already run is refused, naming the stage, and changes nothing.
    let cfg = tmp.path().join("other.toml");
    fs::write(&cfg, "[pack]\nseq_len = 2048\n").expect("write");
    let err = run_err(&["build", &p(&ds), "--preset", "demo", "--config", &p(&cfg)]);
    assert!(
        err.contains("build stage pack") && err.contains("different configuration"),
        "{err}"
    );
    assert_eq!(packed(&ds, "train.bin"), bin2);

    // A misspelt setting is refused before anything runs.
    fs::write(&cfg, "[pack]\nseq_length = 2048\n").expect("write");
    let err = run_err(&["build", &p(&ds), "--config", &p(&cfg)]);
    assert!(
        err.contains("seq_length") && err.contains("other.toml"),
        "{err}"
    );

    // The human summary names every output.
    let out = run_ok(&["build", &p(&ds), "--preset", "demo", "--no-progress"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for what in ["pack", "packed/", "neighbors/", "tokens/", "build.json"] {
        assert!(text.contains(what), "summary without {what}: {text}");
    }
}

#[test]
fn a_killed_build_rerun_gives_the_same_sequences() {
    runtime();
    let tmp = tempfile::tempdir().expect("tmp");
    let input = tmp.path().join("input");
    sample_part(&input, 0..32);
    let cfg = reproducible_build_config(tmp.path(), "shard_rows = 6\n");
    let args = |ds: &Path| demo_build_args(ds, &cfg, &input);
    let reference = tmp.path().join("reference");
    let a = args(&reference);
    run_ok(&a.iter().map(String::as_str).collect::<Vec<_>>());

    // Kill the build as soon as each stage's output appears, then run it again to the end.
    let mut interrupted = 0;
    for (n, marker) in ["pairs", "embeddings", "neighbors", "tokens", "packed"]
        .iter()
        .enumerate()
    {
        let ds = tmp.path().join(format!("killed-{n}"));
        let mut child = cm3()
            .args(args(&ds))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn cm3");
        let start = Instant::now();
        while !ds.join(marker).exists() && start.elapsed() < Duration::from_secs(120) {
            if child.try_wait().expect("wait").is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if child.try_wait().expect("wait").is_none() {
            child.kill().expect("kill");
            interrupted += 1;
        }
        child.wait().expect("wait");
        let a = args(&ds);
        run_ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
        for f in [
            "train.bin",
            "train.idx",
            "val.bin",
            "val.idx",
            "train.boundaries.bin",
            "val.boundaries.bin",
        ] {
            assert!(
                packed(&ds, f) == packed(&reference, f),
                "packed/{f} differs after a build killed once {marker}/ existed"
            );
        }
        assert_eq!(read_tokens(&ds), read_tokens(&reference));
    }
    // Most kills land while the build is still running (the last stages can be quicker than
    // the poll); the test is only meaningful if some did.
    assert!(
        interrupted >= 3,
        "only {interrupted} kill(s) interrupted a build"
    );
}

/// Every file under `dir` whose name marks a temporary file.
fn temporaries(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if p.is_dir() {
            out.extend(temporaries(&p));
        } else if name.contains(".tmp-") {
            out.push(p.display().to_string());
        }
    }
    out
}

/// What `manifest.json` records that is not on disk as recorded (a shard file missing, or
/// with other bytes than its recorded SHA-256).
fn recorded_but_missing(ds: &Path) -> Vec<String> {
    let mut bad = Vec::new();
    for (stage, shards) in recorded_shards(ds) {
        for (name, shard) in &shards {
            let file = ds.join(&shard.file);
            let sha = shard.sha256.as_str();
            if !file.exists() {
                bad.push(format!("{stage}/{name}: {} missing", file.display()));
            } else if file.is_file() && sha.len() == 64 {
                use sha2::Digest;
                let got = hex(&sha2::Sha256::digest(fs::read(&file).expect("read")));
                if got != sha {
                    bad.push(format!(
                        "{stage}/{name}: {} has other bytes",
                        file.display()
                    ));
                }
            }
        }
    }
    bad
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The fault campaign's kill-anywhere test: `cm3 build` killed (SIGKILL) at 20 seeded moments
/// spread over an uninterrupted build's duration, not only at stage boundaries. After each kill
/// nothing is recorded that is not on disk as recorded; the same command run again finishes
/// with the same packed sequences and tokens as the uninterrupted build, and no temporary file
/// is left.
#[test]
fn a_build_killed_at_random_moments_reruns_to_the_same_output() {
    runtime();
    let tmp = tempfile::tempdir().expect("tmp");
    let input = tmp.path().join("input");
    sample_part(&input, 0..12);
    let cfg = reproducible_build_config(tmp.path(), "shard_rows = 3\n");
    let args = |ds: &Path| demo_build_args(ds, &cfg, &input);
    let reference = tmp.path().join("reference");
    let started = Instant::now();
    let a = args(&reference);
    run_ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let duration = started.elapsed();
    let mut rng = cm3_core::rng::SplitMix64::new(21);
    let mut interrupted = 0;
    for n in 0..20 {
        let at = duration.mul_f64(rng.next_f64());
        let ds = tmp.path().join(format!("killed-{n}"));
        interrupted += usize::from(run_killed_after(&args(&ds), at));
        let bad = recorded_but_missing(&ds);
        assert!(
            bad.is_empty(),
            "killed at {at:?}: recorded, not on disk: {bad:?}"
        );
        let a = args(&ds);
        run_ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
        for f in ["train.bin", "train.idx", "val.bin", "val.idx"] {
            assert!(
                packed(&ds, f) == packed(&reference, f),
                "packed/{f} differs after a kill at {at:?}"
            );
        }
        assert_eq!(read_tokens(&ds), read_tokens(&reference), "kill at {at:?}");
        let left = temporaries(&ds);
        assert!(left.is_empty(), "kill at {at:?} left {left:?}");
        assert!(recorded_but_missing(&ds).is_empty());
    }
    println!("{interrupted} of 20 kills interrupted a build of {duration:?}");
    assert!(
        interrupted >= 10,
        "only {interrupted} kills interrupted a build"
    );
}

/// Unmounts a tmpfs when dropped.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

fn mount_tmpfs(dir: &Path, bytes: u64) -> bool {
    fs::create_dir_all(dir).expect("mkdir");
    std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success())
}

fn disk_usage(dir: &Path) -> u64 {
    let mut n = 0;
    for e in fs::read_dir(dir).expect("dir").flatten() {
        let p = e.path();
        n += if p.is_dir() {
            disk_usage(&p)
        } else {
            e.metadata().map_or(0, |m| m.len())
        };
    }
    n
}

/// The fault campaign's full-disk test: `cm3 build` into a filesystem with room for about half
/// of the dataset (a tmpfs; skipped, saying so, where one cannot be mounted) fails with an error
/// that names the lack of space, records nothing that is not on disk, and the same command run
/// again once there is room finishes with the same packed sequences and tokens as a build that
/// never ran out, leaving no temporary file.
#[test]
fn a_build_on_a_full_disk_fails_clearly_and_completes_when_there_is_room() {
    runtime();
    let tmp = tempfile::tempdir().expect("tmp");
    let input = tmp.path().join("input");
    sample_part(&input, 0..12);
    let cfg = reproducible_build_config(tmp.path(), "shard_rows = 3\n");
    let args = |ds: &Path| demo_build_args(ds, &cfg, &input);
    let reference = tmp.path().join("reference");
    let a = args(&reference);
    run_ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let size = disk_usage(&reference);
    let disk = tmp.path().join("disk");
    if !mount_tmpfs(&disk, size / 2) {
        println!("skipped: cannot mount a tmpfs here (needs root), so no full disk to test on");
        return;
    }
    let _unmount = Mounted(disk.clone());
    let ds = disk.join("ds");
    let a = args(&ds);
    let out = cm3()
        .args(a.iter().map(String::as_str))
        .output()
        .expect("spawn");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a build on a full disk succeeded");
    assert!(
        err.contains("No space left on device"),
        "the error does not say the disk is full: {err}"
    );
    let bad = recorded_but_missing(&ds);
    assert!(bad.is_empty(), "recorded, not on disk: {bad:?}");
    // Room again: the same command finishes, as if nothing had happened.
    let grown = std::process::Command::new("mount")
        .args(["-o", &format!("remount,size={}", size * 4)])
        .arg(&disk)
        .status()
        .expect("remount");
    assert!(grown.success());
    run_ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    for f in ["train.bin", "train.idx", "val.bin", "val.idx"] {
        assert!(
            packed(&ds, f) == packed(&reference, f),
            "packed/{f} differs"
        );
    }
    assert_eq!(read_tokens(&ds), read_tokens(&reference));
    let left = temporaries(&ds);
    assert!(left.is_empty(), "temporary files left: {left:?}");
}
