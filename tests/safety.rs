//! End-to-end tests of what cm3 may delete, overwrite and trust: it removes only what its own
//! records say it wrote, in a directory it can prove is its own, and a name read from a file never
//! leaves the directory it is meant for.
mod common;

use std::fs;
use std::path::Path;

use common::*;

/// A float32 .npy of `n` unit-ish vectors.
fn vectors(path: &Path, n: usize, dim: usize) {
    let v: Vec<f32> = (0..n * dim)
        .map(|i| ((i * 7919) % 13) as f32 - 6.0)
        .collect();
    fs::write(path, cm3_embed::npy::encode_f32(&[n, dim], &v)).expect("write npy");
}

/// A folder of someone else's: a file and a `gen-*` folder, which an index update used to take
/// for its own generations.
fn foreign_dir(dir: &Path) {
    fs::create_dir_all(dir.join("gen-2019")).expect("mkdir");
    fs::write(dir.join("gen-2019/photo.jpg"), b"precious").expect("w");
    fs::write(dir.join("notes.txt"), b"mine").expect("w");
}

fn assert_foreign_intact(dir: &Path) {
    assert_eq!(
        fs::read(dir.join("gen-2019/photo.jpg")).ok().as_deref(),
        Some(&b"precious"[..]),
        "{} lost gen-2019/photo.jpg",
        dir.display()
    );
    assert_eq!(
        fs::read(dir.join("notes.txt")).ok().as_deref(),
        Some(&b"mine"[..])
    );
}

#[test]
fn index_rebuild_refuses_a_directory_that_is_no_index() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (v, out) = (tmp.path().join("v.npy"), tmp.path().join("photos"));
    vectors(&v, 20, 8);
    foreign_dir(&out);
    let build = |extra: &[&str]| {
        let (v, out) = (p(&v), p(&out));
        let mut args = vec![
            "index",
            "build",
            "--vectors",
            &v,
            "--kind",
            "flat",
            "--out",
            &out,
        ];
        args.extend_from_slice(extra);
        cm3().args(&args).output().expect("spawn cm3")
    };
    // Before: the whole folder was removed.
    let res = build(&["--rebuild"]);
    let err = stderr(&res);
    assert!(!res.status.success());
    assert!(
        err.contains(&p(&out)) && err.contains("INDEX.json"),
        "the refusal names the directory and why: {err}"
    );
    assert_foreign_intact(&out);
    assert!(!out.join("INDEX.json").exists());
    // Without --rebuild the index is written beside the folder's own things, which stay (before:
    // `gen-2019` went with the old generations).
    assert!(build(&[]).status.success());
    assert_foreign_intact(&out);
    assert!(out.join("INDEX.json").is_file() && out.join("gen-000001").is_dir());
    // Now it is an index: --rebuild replaces the index, and only the index.
    assert!(build(&["--rebuild"]).status.success());
    assert_foreign_intact(&out);
    assert!(out.join("INDEX.json").is_file());
    // A generation folder that no INDEX.json records is not taken for cm3's own.
    let other = tmp.path().join("other");
    fs::create_dir_all(other.join("gen-000001")).expect("mkdir");
    fs::write(other.join("gen-000001/data"), b"theirs").expect("w");
    let err = run_err(&["index", "build", "--vectors", &p(&v), "--out", &p(&other)]);
    assert!(err.contains(&p(&other.join("gen-000001"))), "{err}");
    assert_eq!(
        fs::read(other.join("gen-000001/data")).ok().as_deref(),
        Some(&b"theirs"[..])
    );
}

#[test]
fn index_updates_and_rebuilds_remove_only_their_own_generations() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (v, out) = (tmp.path().join("v.npy"), tmp.path().join("idx"));
    vectors(&v, 20, 8);
    let build = |extra: &[&str]| {
        let mut args = vec![
            "index".to_string(),
            "build".into(),
            "--vectors".into(),
            p(&v),
            "--kind".into(),
            "flat".into(),
            "--ids".into(),
        ];
        let ids = tmp.path().join(format!("ids{}.npy", extra.len()));
        let base = if extra.contains(&"--append") { 100 } else { 0 };
        fs::write(
            &ids,
            cm3_embed::npy::encode_u64(&(base..base + 20).collect::<Vec<_>>()),
        )
        .expect("w");
        args.push(p(&ids));
        args.extend(["--out".into(), p(&out)]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_ok(&args);
    };
    build(&[]);
    // Someone puts their own things into the index folder.
    foreign_dir(&out);
    build(&["--append"]);
    assert_foreign_intact(&out);
    assert!(out.join("gen-000002").is_dir() && !out.join("gen-000001").exists());
    build(&["--rebuild"]);
    assert_foreign_intact(&out);
    assert!(out.join("INDEX.json").is_file());
}

#[test]
fn ingest_rebuild_deletes_nothing_of_a_directory_that_is_no_dataset() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (a, out) = (tmp.path().join("a"), tmp.path().join("project"));
    sample_part(&a, 0..4);
    fs::create_dir_all(out.join("pairs")).expect("mkdir");
    fs::write(out.join("pairs/thesis.parquet"), b"years of work").expect("w");
    let (input, out_s) = (p(&a), p(&out));
    for extra in [&["--rebuild"][..], &[]] {
        let mut args = vec!["ingest", "--input", &input, "--out", &out_s];
        args.extend_from_slice(extra);
        let err = run_err(&args);
        assert!(
            err.contains(&out_s) && err.contains("manifest.json"),
            "the refusal names the directory and why: {err}"
        );
        assert_eq!(
            fs::read(out.join("pairs/thesis.parquet")).ok().as_deref(),
            Some(&b"years of work"[..])
        );
    }
}

#[test]
fn ingest_rebuild_checks_its_inputs_before_discarding_anything() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (a, ds) = (tmp.path().join("a"), tmp.path().join("ds"));
    sample_part(&a, 0..4);
    run_ok(&[
        "ingest",
        "--input",
        &p(&a),
        "--out",
        &p(&ds),
        "--no-progress",
    ]);
    let before = output_bytes(&ds);
    let manifest_before = manifest(&ds);
    assert!(!before.is_empty());
    // A typo in the input: the run fails, and the dataset is as it was.
    let missing = tmp.path().join("no-such-input");
    let err = run_err(&[
        "ingest",
        "--input",
        &p(&missing),
        "--out",
        &p(&ds),
        "--rebuild",
    ]);
    assert!(err.contains("no-such-input"), "{err}");
    assert_eq!(output_bytes(&ds), before);
    assert_eq!(manifest(&ds), manifest_before);
    // A real rebuild removes exactly the recorded files; a file of the user's stays.
    fs::write(ds.join("pairs/README"), b"notes").expect("w");
    run_ok(&[
        "ingest",
        "--input",
        &p(&a),
        "--out",
        &p(&ds),
        "--rebuild",
        "--no-progress",
    ]);
    assert_eq!(
        fs::read(ds.join("pairs/README")).ok().as_deref(),
        Some(&b"notes"[..])
    );
    assert_eq!(manifest(&ds)["stages"]["ingest"]["totals"]["rows"], 4);
}

#[test]
fn shard_names_from_a_manifest_cannot_leave_the_dataset() {
    runtime();
    let tmp = tempfile::tempdir().expect("tmp");
    let (a, ds) = (tmp.path().join("a"), tmp.path().join("ds"));
    sample_part(&a, 0..4);
    run_ok(&[
        "ingest",
        "--input",
        &p(&a),
        "--out",
        &p(&ds),
        "--no-progress",
    ]);
    // A hostile manifest renames the shard so that `embeddings/{name}` is `<tmp>/victim`, which
    // the embed stage would replace (remove, then rename onto).
    let victim = tmp.path().join("victim");
    fs::create_dir_all(&victim).expect("mkdir");
    fs::write(victim.join("keep.txt"), b"keep").expect("w");
    let mut m = manifest(&ds);
    let shards = m["stages"]["ingest"]["shards"]
        .as_object_mut()
        .expect("shards");
    let (name, rec) = shards
        .iter()
        .next()
        .map(|(k, v)| (k.clone(), v.clone()))
        .expect("a shard");
    shards.remove(&name);
    shards.insert("../../victim".into(), rec);
    fs::write(
        ds.join("manifest.json"),
        serde_json::to_vec_pretty(&m).expect("json"),
    )
    .expect("w");
    let err = run_err(&[
        "embed",
        &p(&ds),
        "--image-model",
        &p(&tiny_model("vision")),
        "--text-model",
        &p(&tiny_model("text")),
    ]);
    assert!(
        err.contains("../../victim") && err.contains("manifest.json"),
        "the error names the name and the file it came from: {err}"
    );
    assert_eq!(
        fs::read(victim.join("keep.txt")).ok().as_deref(),
        Some(&b"keep"[..])
    );
    // A recorded file outside the dataset is refused the same way.
    let mut m = manifest(&ds);
    let shards = m["stages"]["ingest"]["shards"]
        .as_object_mut()
        .expect("shards");
    let mut rec = shards.remove("../../victim").expect("the renamed shard");
    rec["file"] = "../victim/keep.txt".into();
    shards.insert(name, rec);
    fs::write(
        ds.join("manifest.json"),
        serde_json::to_vec_pretty(&m).expect("json"),
    )
    .expect("w");
    let err = run_err(&["inspect", &p(&ds)]);
    assert!(err.contains("../victim/keep.txt"), "{err}");
}

/// Inputs that are not regular files: a FIFO or a directory where a table row names an image
/// (reading a FIFO would block forever) is that pair's reject with the reason, the other pairs
/// are ingested; in a folder they are not taken for pairs; a FIFO given as a JSONL table is
/// refused by name. Nothing hangs.
#[cfg(unix)]
#[test]
fn ingest_rejects_inputs_that_are_not_regular_files() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (input, ds) = (tmp.path().join("in"), tmp.path().join("ds"));
    sample_part(&input, 0..3);
    let mkfifo = |path: &Path| {
        let made = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .expect("mkfifo");
        assert!(made.success());
    };
    mkfifo(&input.join("zz-fifo.jpg"));
    fs::write(input.join("zz-fifo.txt"), "a pipe").expect("caption");
    fs::create_dir(input.join("zz-dir.jpg")).expect("a directory named as an image");
    fs::write(input.join("zz-dir.txt"), "a folder").expect("caption");
    run_ok(&[
        "ingest",
        "--input",
        &p(&input),
        "--out",
        &p(&ds),
        "--no-progress",
    ]);
    assert_eq!(manifest(&ds)["stages"]["ingest"]["totals"]["rows"], 3);

    // A table naming them: each is a reject saying why.
    let first = sample_pairs()[0].image.clone();
    let rows = [
        serde_json::json!({"image": first.file_name().expect("name").to_string_lossy(), "caption": "fine"}),
        serde_json::json!({"image": "zz-fifo.jpg", "caption": "a pipe"}),
        serde_json::json!({"image": "zz-dir.jpg", "caption": "a folder"}),
    ];
    let table = input.join("pairs.jsonl");
    fs::write(
        &table,
        rows.iter().map(|r| format!("{r}\n")).collect::<String>(),
    )
    .expect("jsonl");
    let ds2 = tmp.path().join("ds2");
    run_ok(&[
        "ingest",
        "--input",
        &p(&table),
        "--out",
        &p(&ds2),
        "--no-progress",
    ]);
    assert_eq!(manifest(&ds2)["stages"]["ingest"]["totals"]["rows"], 1);
    let rejects = rejects_text(&ds2);
    assert_eq!(
        rejects.matches("not a regular file").count(),
        2,
        "{rejects}"
    );

    let fifo_table = tmp.path().join("fifo.jsonl");
    mkfifo(&fifo_table);
    let err = run_err(&[
        "ingest",
        "--input",
        &p(&fifo_table),
        "--out",
        &p(&tmp.path().join("ds3")),
        "--no-progress",
    ]);
    assert!(err.contains("not a regular file"), "{err}");
}

/// A JSONL line longer than the bound is one malformed row, never held whole; the rows after it
/// are read.
#[test]
fn a_jsonl_line_without_end_is_not_read_whole() {
    let tmp = tempfile::tempdir().expect("tmp");
    let input = tmp.path().join("in");
    sample_part(&input, 0..1);
    let image = sample_pairs()[0]
        .image
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let huge = format!(
        "{{\"image\": \"{image}\", \"caption\": \"{}\"}}\n",
        "x".repeat(17 << 20)
    );
    let good = serde_json::json!({"image": image, "caption": "fine"});
    fs::write(input.join("pairs.jsonl"), format!("{huge}{good}\n")).expect("jsonl");
    let ds = tmp.path().join("ds");
    run_ok(&[
        "ingest",
        "--input",
        &p(&input.join("pairs.jsonl")),
        "--out",
        &p(&ds),
        "--no-progress",
    ]);
    assert_eq!(manifest(&ds)["stages"]["ingest"]["totals"]["rows"], 1);
    let rejects = rejects_text(&ds);
    assert!(rejects.contains("longer than 16777216 bytes"), "{rejects}");
}

/// The image tokenizer commands, tokenize, generate and sft build take `--backend` like
/// `cm3 train`; a backend this build lacks is a clear error naming the feature, not a panic.
#[test]
fn a_backend_that_is_not_built_is_named() {
    let tmp = tempfile::tempdir().expect("tmp");
    let image = sample_pairs()[0].image.clone();
    let vq = vq_ckpt();
    let codes = tmp.path().join("codes.json");
    run_ok(&[
        "tokenizer",
        "encode-image",
        &p(&image),
        "--image-tokenizer",
        &p(&vq),
        "--backend",
        "flex",
        "--out",
        &p(&codes),
    ]);
    for backend in ["wgpu", "cuda"] {
        if cfg!(feature = "wgpu") && backend == "wgpu"
            || cfg!(feature = "cuda") && backend == "cuda"
        {
            continue;
        }
        let err = run_err(&[
            "tokenizer",
            "encode-image",
            &p(&image),
            "--image-tokenizer",
            &p(&vq),
            "--backend",
            backend,
        ]);
        assert!(err.contains(&format!("--features {backend}")), "{err}");
        let err = run_err(&[
            "tokenizer",
            "decode-image",
            &p(&codes),
            "--image-tokenizer",
            &p(&vq),
            "--backend",
            backend,
            "--out",
            &p(&tmp.path().join("x.png")),
        ]);
        assert!(err.contains(&format!("--features {backend}")), "{err}");
    }
}

/// Every reject line of a dataset, as one text.
fn rejects_text(ds: &Path) -> String {
    fs::read_dir(ds.join("rejects"))
        .expect("rejects/")
        .map(|e| fs::read_to_string(e.expect("entry").path()).unwrap_or_default())
        .collect()
}

/// `cm3` as a user for whom a `chmod 000` file is unreadable: this process when it is not
/// root, else the `nobody` user through `setpriv` (None, with the reason printed, where neither
/// works).
fn unprivileged_cm3() -> Option<std::process::Command> {
    let uid = std::process::Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if uid.as_deref() != Some("0") {
        return Some(cm3());
    }
    let probe = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "true"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        println!("skipped: running as root without a working `setpriv` to drop privileges");
        return None;
    }
    let mut c = std::process::Command::new("setpriv");
    c.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        env!("CARGO_BIN_EXE_cm3"),
    ])
    .env("RUST_LOG", "warn");
    Some(c)
}

/// A read that fails for a reason that may pass (here: permission denied) is not a reject: its
/// shard is not written, the run fails naming the file, the other shards are recorded, and the
/// next run, once the file is readable, writes the missing shard: no pair is lost.
#[test]
fn an_unreadable_file_is_retried_not_rejected() {
    use std::os::unix::fs::PermissionsExt;
    let Some(mut first) = unprivileged_cm3() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o777)).expect("chmod");
    let input = tmp.path().join("in");
    fs::create_dir_all(&input).expect("dir");
    let pairs = sample_pairs();
    for p in &pairs[..3] {
        fs::copy(&p.image, input.join(format!("{}.{}", p.stem, p.ext()))).expect("image");
        fs::write(input.join(format!("{}.txt", p.stem)), &p.caption).expect("caption");
    }
    let locked = input.join(format!("{}.{}", pairs[1].stem, pairs[1].ext()));
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).expect("chmod");
    let ds = tmp.path().join("ds");
    let args = [
        "ingest",
        "--input",
        input.to_str().expect("utf8"),
        "--out",
        ds.to_str().expect("utf8"),
        "--shard-rows",
        "1",
        "--no-progress",
    ];
    let out = first.args(args).output().expect("spawn");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a file that could not be read looks like success: {err}"
    );
    assert!(
        err.contains("could not be read") && err.contains(&pairs[1].stem),
        "{err}"
    );
    // The two readable pairs are recorded; nothing was rejected.
    assert_eq!(read_rows(&ds).len(), 2);
    assert!(read_rejects(&ds).is_empty(), "{:?}", read_rejects(&ds));
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o644)).expect("chmod");
    let mut again = unprivileged_cm3().expect("checked above");
    let out = again.args(args).output().expect("spawn");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read_rows(&ds).len(), 3, "the retried pair is there");
}

/// A panic in the ingest reader (injected with `CM3_FAULT`, debug builds) leaves the shard in
/// progress unwritten: the finished shard before it stays recorded, and the next run writes the
/// rest, so no pair is lost (before, the partial shard was recorded as complete and skipped).
#[test]
fn a_panicking_reader_does_not_commit_its_shard() {
    if !cfg!(debug_assertions) {
        println!("skipped: fault injection (CM3_FAULT) exists in debug builds only");
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let input = tmp.path().join("in");
    fs::create_dir_all(&input).expect("dir");
    for p in &sample_pairs()[..4] {
        fs::copy(&p.image, input.join(format!("{}.{}", p.stem, p.ext()))).expect("image");
        fs::write(input.join(format!("{}.txt", p.stem)), &p.caption).expect("caption");
    }
    let ds = tmp.path().join("ds");
    let args = [
        "ingest",
        "--input",
        input.to_str().expect("utf8"),
        "--out",
        ds.to_str().expect("utf8"),
        "--shard-rows",
        "2",
        "--no-progress",
    ];
    // Records 0 and 1 make shard 0; the reader dies before sending record 3 (shard 1 has 1 of 2).
    let out = cm3()
        .args(args)
        .env("CM3_FAULT", "ingest.reader@3")
        .output()
        .expect("spawn");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("shard in progress was not written"), "{err}");
    assert_eq!(
        read_rows(&ds).len(),
        2,
        "only the finished shard is recorded"
    );
    run_ok(&args);
    assert_eq!(
        read_rows(&ds).len(),
        4,
        "the rest is written by the next run"
    );
}

/// After `cm3 ingest --rebuild` writes other pairs under the same shard names, the later stages'
/// records describe data that is gone: every stage that reads them, and `cm3 train`, refuses,
/// naming the stage to rebuild (each record names the SHA-256 of the upstream shard it was made
/// from).
#[test]
fn stages_made_from_rebuilt_upstream_are_refused() {
    runtime();
    let tmp = tempfile::tempdir().expect("tmp");
    let ds = prepared(tmp.path(), 6);
    let input = tmp.path().join("input");
    let first = &sample_pairs()[0];
    fs::write(
        input.join(format!("{}.txt", first.stem)),
        "another caption altogether",
    )
    .expect("w");
    run_ok(&[
        "ingest",
        "--input",
        &p(&input),
        "--out",
        &p(&ds),
        "--image-size",
        "32",
        "--rebuild",
        "--no-progress",
    ]);
    let (ds_s, vq) = (p(&ds), p(&vq_ckpt()));
    let tokenize = ["tokenize", ds_s.as_str(), "--image-tokenizer", vq.as_str()];
    for args in [&tokenize[..], &["pack", ds_s.as_str()][..]] {
        let err = run_err(args);
        assert!(
            err.contains("is stale") && err.contains("was made from `ingest` shard"),
            "{args:?}: {err}"
        );
    }
    let err = run_err(&[
        "train",
        "--data",
        &ds_s,
        "--out",
        &p(&tmp.path().join("run")),
        "--steps",
        "1",
    ]);
    assert!(err.contains("is stale") && err.contains("rebuild"), "{err}");
    // Rebuilding the stage named clears its refusal; the next stage down is named next.
    run_ok(&[&tokenize[..], &["--rebuild"]].concat());
    let err = run_err(&["pack", &ds_s]);
    assert!(
        err.contains("stage `pack` is stale") || err.contains("stage `augment` is stale"),
        "{err}"
    );
}

/// Links and paths that leave the input: a symbolic link named by an input (an image, a caption
/// file) and a manifest path that leaves its folder (`..`, absolute elsewhere) are `unsafe-path`
/// rejects unless the user opts in (`--follow-symlinks`, `--allow-outside-paths`).
#[test]
fn links_and_outside_paths_need_an_opt_in() {
    let tmp = tempfile::tempdir().expect("tmp");
    let pairs = sample_pairs();
    let elsewhere = tmp.path().join("elsewhere");
    fs::create_dir_all(&elsewhere).expect("dir");
    let secret = elsewhere.join("secret.txt");
    fs::write(&secret, "a private note").expect("secret");
    let far_image = elsewhere.join(format!("far.{}", pairs[3].ext()));
    fs::copy(&pairs[3].image, &far_image).expect("image");
    // A folder: two plain pairs, a linked image, a linked caption.
    let folder = tmp.path().join("folder");
    fs::create_dir_all(&folder).expect("dir");
    for p in &pairs[..3] {
        fs::copy(&p.image, folder.join(format!("{}.{}", p.stem, p.ext()))).expect("image");
    }
    fs::write(
        folder.join(format!("{}.txt", pairs[0].stem)),
        &pairs[0].caption,
    )
    .expect("w");
    fs::write(
        folder.join(format!("{}.txt", pairs[1].stem)),
        &pairs[1].caption,
    )
    .expect("w");
    std::os::unix::fs::symlink(&secret, folder.join(format!("{}.txt", pairs[2].stem)))
        .expect("link");
    std::os::unix::fs::symlink(
        &far_image,
        folder.join(format!("linked.{}", pairs[3].ext())),
    )
    .expect("link");
    fs::write(folder.join("linked.txt"), "a linked picture").expect("w");
    let ingest = |input: &Path, ds: &Path, extra: &[&str]| {
        run_ok(
            &[
                &[
                    "ingest",
                    "--input",
                    &p(input),
                    "--out",
                    &p(ds),
                    "--no-progress",
                ][..],
                extra,
            ]
            .concat(),
        );
    };
    let ds = tmp.path().join("ds");
    ingest(&folder, &ds, &[]);
    assert_eq!(read_rows(&ds).len(), 2);
    let rejects = read_rejects(&ds);
    let unsafe_links = rejects
        .iter()
        .filter(|r| {
            r["reason"] == "unsafe-path"
                && r["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("symbolic link"))
        })
        .count();
    assert_eq!(unsafe_links, 2, "{rejects:?}");
    assert!(
        read_rows(&ds)
            .iter()
            .all(|r| !r.caption.contains("private")),
        "a linked file's text became a caption"
    );
    let ds_follow = tmp.path().join("ds-follow");
    ingest(&folder, &ds_follow, &["--follow-symlinks"]);
    assert_eq!(read_rows(&ds_follow).len(), 4);

    // A manifest: one path inside, one through `..`, one absolute elsewhere.
    let table_dir = tmp.path().join("table");
    fs::create_dir_all(&table_dir).expect("dir");
    fs::copy(
        &pairs[0].image,
        table_dir.join(format!("in.{}", pairs[0].ext())),
    )
    .expect("image");
    let rows = [
        serde_json::json!({"image": format!("in.{}", pairs[0].ext()), "caption": "inside"}),
        serde_json::json!({"image": format!("../elsewhere/far.{}", pairs[3].ext()), "caption": "up and out"}),
        serde_json::json!({"image": p(&far_image), "caption": "absolute elsewhere"}),
    ];
    let table = table_dir.join("rows.jsonl");
    fs::write(
        &table,
        rows.iter().map(|r| format!("{r}\n")).collect::<String>(),
    )
    .expect("jsonl");
    let ds_table = tmp.path().join("ds-table");
    ingest(&table, &ds_table, &[]);
    assert_eq!(read_rows(&ds_table).len(), 1);
    let outside = read_rejects(&ds_table)
        .iter()
        .filter(|r| {
            r["reason"] == "unsafe-path"
                && r["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("--allow-outside-paths"))
        })
        .count();
    assert_eq!(outside, 2);
    let ds_table_out = tmp.path().join("ds-table-out");
    ingest(&table, &ds_table_out, &["--allow-outside-paths"]);
    // The two outside rows are one picture: the second is a duplicate of the first.
    assert_eq!(read_rows(&ds_table_out).len(), 3);
}

/// A CSV field without its closing quote (here 17 MiB of caption) is never read whole: past
/// 16 MiB for one record the row is a `malformed-record` reject naming the bound, and the rows
/// before it are kept.
#[test]
fn a_csv_record_is_bounded_before_it_is_held() {
    let tmp = tempfile::tempdir().expect("tmp");
    let pair = &sample_pairs()[0];
    fs::copy(&pair.image, tmp.path().join(format!("ok.{}", pair.ext()))).expect("image");
    let mut csv = format!(
        "image,caption\nok.{ext},a usable row\nok.{ext},\"",
        ext = pair.ext()
    )
    .into_bytes();
    csv.extend(std::iter::repeat_n(b'a', 17 << 20));
    let table = tmp.path().join("rows.csv");
    fs::write(&table, csv).expect("csv");
    let ds = tmp.path().join("ds");
    run_ok(&[
        "ingest",
        "--input",
        &p(&table),
        "--out",
        &p(&ds),
        "--no-progress",
    ]);
    assert_eq!(read_rows(&ds).len(), 1);
    let rejects = read_rejects(&ds);
    assert!(
        rejects.iter().any(|r| r["reason"] == "malformed-record"
            && r["detail"]
                .as_str()
                .is_some_and(|d| d.contains("over 16777216 bytes"))),
        "{rejects:?}"
    );
}
