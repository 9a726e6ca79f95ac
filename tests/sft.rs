//! `cm3 sft build` end to end on the embedded sample: a VQA v2 folder and a COCO-format
//! captions folder over the sample's images, mixed in Table 5's templates, then
//! `cm3 train --init-from` the pretrained run, `cm3 generate` and `cm3 eval vqa` with the
//! fine-tuned run (whose leakage guard knows the SFT images), and the refusals.
mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;

/// A VQA v2 folder (two questions per image, ids in the file names) and a COCO captions folder
/// (one caption per image) over the first `n` sample pairs.
fn task_folders(dir: &Path, n: usize) -> (PathBuf, PathBuf) {
    let pairs = sample_pairs();
    let (vqa, coco) = (dir.join("vqa"), dir.join("coco"));
    fs::create_dir_all(vqa.join("images")).expect("vqa");
    fs::create_dir_all(coco.join("images")).expect("coco");
    let (mut questions, mut annotations, mut images, mut captions) =
        (vec![], vec![], vec![], vec![]);
    for (i, pair) in pairs[..n].iter().enumerate() {
        let id = 100 + i;
        let ext = pair.ext();
        fs::copy(
            &pair.image,
            vqa.join(format!("images/COCO_val2014_{id:012}.{ext}")),
        )
        .expect("copy");
        let name = format!("{}.{ext}", pair.stem);
        fs::copy(&pair.image, coco.join("images").join(&name)).expect("copy");
        let last = pair.caption.split_whitespace().last().unwrap_or("thing");
        let last = last
            .trim_matches(|c: char| !c.is_alphanumeric())
            .to_lowercase();
        for (k, (q, a)) in [
            ("What is the last word?", last.as_str()),
            ("Is it a picture?", "yes"),
        ]
        .into_iter()
        .enumerate()
        {
            let qid = id * 10 + k;
            questions.push(serde_json::json!({"question_id": qid, "image_id": id, "question": q}));
            annotations.push(serde_json::json!({
                "question_id": qid, "image_id": id, "multiple_choice_answer": a,
                "question_type": "what", "answer_type": "other",
                "answers": (1..=10).map(|j| serde_json::json!({"answer": a, "answer_id": j})).collect::<Vec<_>>(),
            }));
        }
        images.push(serde_json::json!({"id": id, "file_name": name}));
        captions.push(serde_json::json!({"id": i, "image_id": id, "caption": pair.caption}));
    }
    let write = |path: PathBuf, v: serde_json::Value| fs::write(path, v.to_string()).expect("json");
    write(
        vqa.join("questions.json"),
        serde_json::json!({"questions": questions}),
    );
    write(
        vqa.join("annotations.json"),
        serde_json::json!({"annotations": annotations}),
    );
    write(
        coco.join("annotations").join("captions_train.json"),
        serde_json::json!({"images": images, "annotations": captions}),
    );
    // Boxes for grounded generation: one object per image, the middle of the picture.
    let (mut with_dims, mut boxes) = (vec![], vec![]);
    for (i, pair) in pairs[..n].iter().enumerate() {
        let (w, h) = (
            pair.meta["width"].as_f64().expect("w"),
            pair.meta["height"].as_f64().expect("h"),
        );
        with_dims.push(serde_json::json!({"id": 100 + i, "file_name": format!("{}.{}", pair.stem, pair.ext()), "width": w, "height": h}));
        boxes.push(
            serde_json::json!({"id": i, "image_id": 100 + i, "category_id": 1 + i % 2, "iscrowd": 0,
            "bbox": [w / 4.0, h / 4.0, w / 2.0, h / 2.0]}),
        );
    }
    write(
        coco.join("annotations").join("instances_train.json"),
        serde_json::json!({"images": with_dims, "annotations": boxes,
            "categories": [{"id": 1, "name": "thing"}, {"id": 2, "name": "other thing"}]}),
    );
    (vqa, coco)
}

/// InstructPix2Pix-style triplets: each sample image "edited" into the next one.
fn edits_folder(dir: &Path, n: usize) -> PathBuf {
    let pairs = sample_pairs();
    let edits = dir.join("edits");
    fs::create_dir_all(edits.join("images")).expect("edits");
    let mut rows = String::new();
    for (i, pair) in pairs[..n].iter().enumerate() {
        let name = format!("images/{}.{}", pair.stem, pair.ext());
        fs::copy(&pair.image, edits.join(&name)).expect("copy");
        let next = &pairs[(i + 1) % n];
        let edited = format!("images/{}.{}", next.stem, next.ext());
        rows.push_str(&serde_json::json!({"input_image": name, "edit_prompt": format!("make it {}", next.caption), "edited_image": edited}).to_string());
        rows.push('\n');
    }
    fs::write(edits.join("metadata.jsonl"), rows).expect("jsonl");
    edits
}

/// The text of every sequence of a packed split, image ids and specials left out.
fn packed_text(
    dataset: &Path,
    tok: &cm3_tokenize::text::TextTokenizer,
    text_size: u32,
) -> (usize, String) {
    let data =
        cm3_pack::megatron::IndexedDataset::read(&dataset.join("packed/train")).expect("packed");
    let mut text = String::new();
    for i in 0..data.lengths.len() {
        let ids: Vec<u32> = data
            .sequence(i)
            .iter()
            .map(|&t| t as u32)
            .filter(|&t| t < text_size)
            .collect();
        text.push_str(&tok.decode(&ids).expect("decode"));
    }
    (data.lengths.len(), text)
}

fn sft_build(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["sft", "build", "--json"];
    all.extend_from_slice(args);
    serde_json::from_slice(&run_ok(&all).stdout).expect("sft report")
}

#[test]
fn sft_build_train_generate_and_evaluate() {
    runtime();
    let tmp = tempfile::tempdir().expect("tmp");
    let ds = prepared(tmp.path(), 16);
    let tiny = tmp.path().join("tiny.toml");
    fs::write(
        &tiny,
        "preset = \"tiny\"\nbatch_size = 2\nsave_every = 2\neval_batches = 1\n",
    )
    .expect("config");
    let pre = tmp.path().join("pre");
    run_ok(&[
        "train",
        "--data",
        &p(&ds),
        "--config",
        &p(&tiny),
        "--out",
        &p(&pre),
        "--steps",
        "2",
        "--json",
    ]);

    fs::create_dir_all(tmp.path().join("coco/annotations")).expect("annotations");
    let (vqa, coco) = task_folders(tmp.path(), 8);
    let cfg = tmp.path().join("sft.toml");
    fs::write(&cfg, "epochs = 2\nseed = 3\nval_fraction = 0.25\n").expect("sft config");
    let out = tmp.path().join("sft");
    let task_vqa = format!("vqa2={}", p(&vqa));
    let task_coco = format!("coco={}", p(&coco));
    let r = sft_build(&[
        &p(&out),
        "--from",
        &p(&pre),
        "--task",
        &task_vqa,
        "--task",
        &task_coco,
        "--config",
        &p(&cfg),
    ]);

    // §E.1 towards the mean size (12): VQA's 16 examples × 0.75, COCO's 8 × 1.5.
    let tasks = r["tasks"].as_array().expect("tasks");
    assert_eq!(tasks[0]["task"], "vqa2");
    assert_eq!(
        (tasks[0]["examples"].as_u64(), tasks[1]["examples"].as_u64()),
        (Some(16), Some(8))
    );
    assert!(
        (tasks[0]["multiplier"].as_f64().expect("m") - 0.75).abs() < 1e-12,
        "{r}"
    );
    assert!(
        (tasks[1]["multiplier"].as_f64().expect("m") - 1.5).abs() < 1e-12,
        "{r}"
    );
    // COCO: every caption at least once an epoch (1 + a coin for the half).
    for d in tasks[1]["drawn"].as_array().expect("drawn") {
        let d = d.as_u64().expect("n");
        assert!((8..=16).contains(&d), "{r}");
    }
    let drawn: u64 = tasks
        .iter()
        .flat_map(|t| {
            t["drawn"]
                .as_array()
                .expect("drawn")
                .iter()
                .map(|d| d.as_u64().expect("n"))
        })
        .sum();
    let written =
        r["train"]["examples"].as_u64().expect("n") + r["val"]["examples"].as_u64().expect("n");
    let skipped = r["train"]["skipped_too_long"].as_u64().expect("n")
        + r["val"]["skipped_too_long"].as_u64().expect("n");
    assert_eq!(written + skipped, drawn, "{r}");
    assert!(written > 20, "{r}");
    // About half of the examples have their output (answer, caption) as the masked span.
    let masked = r["output_masked"].as_u64().expect("n");
    assert!(
        masked > written / 5 && masked < written * 4 / 5,
        "{masked} of {written}"
    );
    // Both Table 5 templates of COCO and all three of VQA's were drawn.
    for t in tasks {
        let used = t["templates"]
            .as_array()
            .expect("templates")
            .iter()
            .filter(|n| n.as_u64() > Some(0))
            .count();
        assert_eq!(used, t["templates"].as_array().expect("t").len(), "{t}");
    }

    // The sequences hold the templates' words, in the pretrained vocabulary.
    let pre_layout: serde_json::Value =
        serde_json::from_slice(&fs::read(ds.join("tokenizer/vocab.json")).expect("vocab"))
            .expect("json");
    let layout: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("tokenizer/vocab.json")).expect("vocab"))
            .expect("json");
    for key in ["size", "version"] {
        assert_eq!(layout[key], pre_layout[key]);
    }
    assert_eq!(
        layout["text"]["tokenizer"]["sha256"],
        pre_layout["text"]["tokenizer"]["sha256"]
    );
    let text_size = layout["text"]["size"].as_u64().expect("size") as u32;
    let tok = cm3_tokenize::text::TextTokenizer::load(Path::new(
        layout["text"]["tokenizer"]["path"].as_str().expect("path"),
    ))
    .expect("tokenizer");
    let (_, text) = packed_text(&out, &tok, text_size);
    assert!(
        text.contains("Question:") && text.contains("Describe the given picture."),
        "{text}"
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("packed/meta.json")).expect("meta"))
            .expect("json");
    assert_eq!(meta["objective_version"], 2);
    assert_eq!(meta["config"]["retrieval"], false);

    // Fine-tune from the pretrained run, then use the result.
    let ft_cfg = tmp.path().join("ft.toml");
    fs::write(&ft_cfg, "preset = \"sft\"\nbatch_size = 2\nbatch_tokens = 0\nlr = 1e-3\nwarmup_steps = 1\nsave_every = 2\neval_batches = 1\n").expect("config");
    let ft = tmp.path().join("ft");
    run_ok(&[
        "train",
        "--init-from",
        &p(&pre),
        "--data",
        &p(&out),
        "--config",
        &p(&ft_cfg),
        "--out",
        &p(&ft),
        "--steps",
        "2",
        "--json",
    ]);
    // The output marks: one byte per token, on the answers and captions (never the template's
    // words) and each example's closing <eos>; the output-only loss trains on them alone.
    let data = cm3_pack::megatron::IndexedDataset::read(&out.join("packed/train")).expect("packed");
    let marks = fs::read(out.join("packed/train.outputs.bin")).expect("marks");
    let tokens: Vec<u32> = (0..data.lengths.len())
        .flat_map(|i| {
            data.sequence(i)
                .iter()
                .map(|&t| t as u32)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(marks.len(), tokens.len());
    assert!(marks.iter().all(|&m| m <= 1));
    let marked: Vec<u32> = tokens
        .iter()
        .zip(&marks)
        .filter(|&(&t, &m)| m == 1 && t < text_size)
        .map(|(&t, _)| t)
        .collect();
    let outputs = tok.decode(&marked).expect("decode");
    assert!(!outputs.trim().is_empty());
    for word in ["Question", "Answer", "Describe"] {
        assert!(
            !outputs.contains(word),
            "{word} marked as output: {outputs}"
        );
    }
    let eos = layout["text"]["specials"]["<eos>"].as_u64().expect("eos") as u32;
    let pad = layout["text"]["specials"]["<pad>"].as_u64().expect("pad") as u32;
    let ends = tokens
        .iter()
        .zip(&marks)
        .filter(|&(&t, &m)| t == eos && m == 1)
        .count();
    assert!(ends > 0 && ends <= written as usize, "{ends} ends");
    assert!(
        tokens.iter().zip(&marks).all(|(&t, &m)| t != pad || m == 0),
        "padding marked"
    );
    let oo_cfg = tmp.path().join("ft-output-only.toml");
    fs::write(
        &oo_cfg,
        format!(
            "{}loss = \"output_only\"\n",
            fs::read_to_string(&ft_cfg).expect("cfg")
        ),
    )
    .expect("config");
    let oo = tmp.path().join("ft-output-only");
    let base = [
        "train",
        "--init-from",
        &p(&pre),
        "--config",
        &p(&oo_cfg),
        "--steps",
        "2",
        "--json",
    ];
    run_ok(&[&base[..], &["--data", &p(&out), "--out", &p(&oo)]].concat());
    let losses = |run: &Path| -> Vec<f64> {
        fs::read_to_string(run.join("metrics.jsonl"))
            .expect("metrics")
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["loss"].as_f64())
            .collect()
    };
    let (whole, only) = (losses(&ft), losses(&oo));
    assert_eq!(only.len(), 2);
    assert!(only.iter().all(|l| l.is_finite()));
    assert_ne!(
        whole[0], only[0],
        "the output-only loss scores other targets"
    );
    // A pretraining dataset marks no outputs: refused, naming the file.
    let refused = run_err(
        &[
            &base[..],
            &["--data", &p(&ds), "--out", &p(&tmp.path().join("oo-pre"))],
        ]
        .concat(),
    );
    assert!(
        refused.contains("train.outputs.bin") && refused.contains("cm3 sft build"),
        "{refused}"
    );

    let first = vqa
        .join("images/COCO_val2014_000000000100")
        .with_extension(sample_pairs()[0].ext());
    run_ok(&[
        "generate",
        "--run",
        &p(&ft),
        "--out",
        &p(&tmp.path().join("gen")),
        "--temperature",
        "0",
        "infill",
        "--text",
        "Question: Is it a picture? Answer: <mask>.",
        "--image",
        &p(&first),
        "--max-tokens",
        "4",
    ]);
    // The task prompts fill Table 5's templates: the text tasks with the output as the span to
    // infill, the image tasks (editing, edge-to-image, detection) ending where the image starts.
    for (task, extra, prompt) in [
        (
            "vqa",
            vec!["--image", "IMG", "--question", "Is it a picture?"],
            Some("Question: Is it a picture? Answer: <mask>."),
        ),
        (
            "caption",
            vec!["--image", "IMG"],
            Some("Describe the given picture. <mask>"),
        ),
        (
            "edit",
            vec!["--image", "IMG", "--instruction", "make it blue"],
            None,
        ),
        (
            "control",
            vec!["--kind", "edge", "--image", "IMG", "--caption", "a photo"],
            None,
        ),
        (
            "control",
            vec![
                "--kind",
                "seg",
                "--feature-image",
                "IMG",
                "--caption",
                "a photo",
            ],
            None,
        ),
        (
            "grounded",
            vec![
                "--caption",
                "a photo",
                "--objects",
                "thing at 1,2,20,30; other thing at 0,0,8,8",
            ],
            None,
        ),
    ] {
        let dir = tmp
            .path()
            .join(format!("gen-{task}-{}", extra[1].replace('-', "")));
        let (run, dir_s, img) = (p(&ft), p(&dir), p(&first));
        let mut a = vec![
            "generate",
            "--run",
            &run,
            "--out",
            &dir_s,
            "--temperature",
            "0",
            task,
        ];
        a.extend(
            extra
                .iter()
                .map(|x| if *x == "IMG" { img.as_str() } else { x }),
        );
        if prompt.is_some() {
            a.extend(["--max-tokens", "4"]);
        }
        run_ok(&a);
        let g: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.join("generation.json")).expect("generation"))
                .expect("json");
        assert_eq!(g["task"], task);
        if let Some(prompt) = prompt {
            assert_eq!(g["input"]["prompt"], prompt);
        }
        assert_eq!(g["outputs"].as_array().map(Vec::len), Some(1), "{g}");
    }
    let (run, img) = (p(&ft), p(&first));
    let err = run_err(&[
        "generate",
        "--run",
        &run,
        "--out",
        &p(&tmp.path().join("gx")),
        "control",
        "--kind",
        "depth",
        "--image",
        &img,
        "--caption",
        "x",
    ]);
    assert!(err.contains("--feature-image"), "{err}");
    let err = run_err(&[
        "generate",
        "--run",
        &run,
        "--out",
        &p(&tmp.path().join("gx")),
        "grounded",
        "--caption",
        "x",
        "--objects",
        "thing at 1,2",
    ]);
    assert!(err.contains("x0,y0,x1,y1"), "{err}");
    // The SFT images are training images of the fine-tuned run: evaluating on them is refused...
    let eval = |out_dir: &str, extra: &[&str]| {
        let mut a = vec![
            "eval",
            "vqa",
            "--run",
            &p(&ft),
            "--questions",
            &p(&vqa.join("questions.json")),
            "--annotations",
            &p(&vqa.join("annotations.json")),
            "--images",
            &p(&vqa.join("images")),
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        a.extend([
            "--out".to_string(),
            p(&tmp.path().join(out_dir)),
            "--count".into(),
            "2".into(),
        ]);
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let a = eval("ev1", &[]);
    let err = run_err(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.contains("--allow-overlap"), "{err}");
    // ... unless accepted, which the report records.
    let a = eval("ev2", &["--allow-overlap", "--json"]);
    run_ok(&a.iter().map(String::as_str).collect::<Vec<_>>());

    // The image tasks: editing, Canny edges computed by cm3, grounded generation; each
    // example's documents in Table 5's words, every image tokenised.
    let edits = edits_folder(tmp.path(), 8);
    let images_out = tmp.path().join("sft-images");
    let r = sft_build(&[
        &p(&images_out),
        "--from",
        &p(&pre),
        "--task",
        &format!("instructpix2pix={}", p(&edits)),
        "--task",
        &format!("edge={}", p(&coco)),
        "--task",
        &format!("detection={}", p(&coco)),
    ]);
    let sizes: Vec<u64> = r["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| t["examples"].as_u64().expect("n"))
        .collect();
    assert_eq!(sizes, [8, 8, 8], "{r}");
    assert_eq!(r["images_rejected"], 0, "{r}");
    // The editing folder's 8 files, the COCO folder's 8 and their 8 edge maps.
    assert_eq!(r["images"], 24, "{r}");
    let (sequences, text) = packed_text(&images_out, &tok, text_size);
    for words in [
        "Edit first image following the instruction",
        "Make high quality image from canny edge features",
        "Generate high quality image of",
        "with segmentations thing at",
    ] {
        assert!(text.contains(words), "{words}: {text}");
    }
    let listed = fs::read_to_string(images_out.join("images.tsv")).expect("images.tsv");
    assert_eq!(
        listed.lines().count(),
        16,
        "edge maps are not listed as pictures"
    );

    // The numpy-only reader prints those documents, images as runs of image tokens.
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts");
    let numpy = std::process::Command::new("bash")
        .arg(scripts.join("setup-python-package.sh"))
        .args(["numpy", "2.2.6"])
        .output()
        .expect("numpy");
    assert!(
        numpy.status.success(),
        "{}",
        String::from_utf8_lossy(&numpy.stderr)
    );
    let mut printed = String::new();
    for k in 0..sequences {
        let out = std::process::Command::new("python3")
            .arg(scripts.join("read_packed.py"))
            .args([p(&images_out), "train".into(), k.to_string()])
            .env("PYTHONPATH", String::from_utf8_lossy(&numpy.stdout).trim())
            .output()
            .expect("read_packed.py");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        printed.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    assert!(
        printed.contains("<break> [16 image tokens] <break>"),
        "two images around a text: {printed}"
    );
    assert!(
        printed.contains("Make high quality image from canny edge features <break>"),
        "{printed}"
    );

    // Rebuild: refused without --rebuild; with it only sft's own files are replaced.
    let args = [
        p(&out),
        "--from".into(),
        p(&pre),
        "--task".into(),
        task_vqa.clone(),
        "--config".into(),
        p(&cfg),
    ];
    let mut a: Vec<&str> = vec!["sft", "build"];
    a.extend(args.iter().map(String::as_str));
    let err = run_err(&a);
    assert!(err.contains("--rebuild"), "{err}");
    fs::write(out.join("notes.txt"), "mine").expect("user file");
    a.extend(["--rebuild", "--json"]);
    let again: serde_json::Value = serde_json::from_slice(&run_ok(&a).stdout).expect("report");
    // The rebuild encodes no image again: the first build's codes are in its cache.
    assert_eq!(
        (
            again["images"].as_u64(),
            again["images_from_cache"].as_u64()
        ),
        (Some(8), Some(8)),
        "{again}"
    );
    assert_eq!(
        fs::read_to_string(out.join("notes.txt")).expect("kept"),
        "mine"
    );
    let rec: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("sft.json")).expect("record")).expect("json");
    assert_eq!(rec["tasks"].as_array().map(Vec::len), Some(1));

    // Refusals: a folder that is not SFT data, a task without a reader, an unknown task.
    let mine = tmp.path().join("mine");
    fs::create_dir(&mine).expect("dir");
    fs::write(mine.join("x"), "x").expect("file");
    let err = run_err(&[
        "sft",
        "build",
        &p(&mine),
        "--from",
        &p(&pre),
        "--task",
        &task_vqa,
    ]);
    assert!(err.contains("not an SFT directory"), "{err}");
    assert_eq!(fs::read_to_string(mine.join("x")).expect("kept"), "x");
    let task_ocr = format!("ocr={}", p(&vqa));
    let err = run_err(&[
        "sft",
        "build",
        &p(&tmp.path().join("e")),
        "--from",
        &p(&pre),
        "--task",
        &task_ocr,
    ]);
    assert!(err.contains("ocr"), "{err}");
    let err = run_err(&[
        "sft",
        "build",
        &p(&tmp.path().join("e")),
        "--from",
        &p(&pre),
        "--task",
        "vqa=x",
    ]);
    assert!(err.contains("unknown SFT task"), "{err}");
    // No build, finished or refused, leaves its temporary directory behind.
    let left: Vec<String> = fs::read_dir(tmp.path())
        .expect("tmp")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("sft-tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// A split build: workers encode their shares of the images, the build without workers writes
/// the same mixture a single process writes, from their codes alone, and removes their files.
#[test]
fn a_split_build_equals_a_single_one() {
    runtime();
    let tmp = tempfile::tempdir().expect("tmp");
    let ds = prepared(tmp.path(), 16);
    fs::create_dir_all(tmp.path().join("coco/annotations")).expect("annotations");
    let (vqa, coco) = task_folders(tmp.path(), 8);
    let task_vqa = format!("vqa2={}", p(&vqa));
    let task_coco = format!("coco={}", p(&coco));
    let common = ["--from", &p(&ds), "--task", &task_vqa, "--task", &task_coco];
    let single = tmp.path().join("single");
    let one = sft_build(&[&[p(&single).as_str()][..], &common[..]].concat());
    assert_eq!(one["worker_caches_merged"], 0);

    let split = tmp.path().join("split");
    let mut shares = 0;
    for i in ["0", "1"] {
        let w = sft_build(
            &[
                &[p(&split).as_str()][..],
                &common[..],
                &["--num-workers", "2", "--worker-index", i],
            ]
            .concat(),
        );
        assert_eq!(
            w["train"]["examples"], 0,
            "a worker writes no sequences: {w}"
        );
        assert!(!split.join("packed").exists());
        shares += w["worker"]["images"].as_u64().expect("images");
    }
    assert_eq!(
        shares,
        one["images"].as_u64().expect("images"),
        "shares cover the images once"
    );
    // A worker run again resumes from its cache: nothing is encoded twice.
    let again = sft_build(
        &[
            &[p(&split).as_str()][..],
            &common[..],
            &["--num-workers", "2", "--worker-index", "1"],
        ]
        .concat(),
    );
    assert_eq!(again["images_from_cache"], again["images"], "{again}");

    let merged = sft_build(&[&[p(&split).as_str()][..], &common[..]].concat());
    assert_eq!(merged["worker_caches_merged"], 2, "{merged}");
    assert_eq!(merged["images_from_cache"], merged["images"], "{merged}");
    for f in [
        "packed/train.bin",
        "packed/val.bin",
        "packed/train.outputs.bin",
        "image-tokens.bin",
    ] {
        assert_eq!(
            fs::read(single.join(f)).expect("single"),
            fs::read(split.join(f)).expect("split"),
            "{f} differs"
        );
    }
    assert!(!split.join("image-tokens.d").exists(), "worker caches left");

    // Workers never write into a folder that is not theirs.
    let foreign = tmp.path().join("foreign");
    fs::create_dir_all(&foreign).expect("dir");
    fs::write(foreign.join("notes.txt"), "mine").expect("file");
    let refused = run_err(
        &[
            &["sft", "build", &p(&foreign)][..],
            &common[..],
            &["--num-workers", "2", "--worker-index", "0"],
        ]
        .concat(),
    );
    assert!(refused.contains("not an SFT directory"), "{refused}");
    assert_eq!(fs::read_dir(&foreign).expect("dir").count(), 1);
}

/// `--exclude`: an evaluation folder's images and a list of hashes stay out of the SFT data.
#[test]
fn evaluation_images_are_excluded() {
    runtime();
    let tmp = tempfile::tempdir().expect("tmp");
    let ds = prepared(tmp.path(), 16);
    fs::create_dir_all(tmp.path().join("coco/annotations")).expect("annotations");
    let (vqa, coco) = task_folders(tmp.path(), 8);
    let task_vqa = format!("vqa2={}", p(&vqa));
    let task_coco = format!("coco={}", p(&coco));
    let common = ["--from", &p(&ds), "--task", &task_vqa, "--task", &task_coco];
    let all = tmp.path().join("all");
    sft_build(&[&[p(&all).as_str()][..], &common[..]].concat());
    // The pictures listed (a picture both tasks use is listed once per file).
    let listed = |dir: &Path| -> Vec<String> {
        let set: std::collections::BTreeSet<String> = fs::read_to_string(dir.join("images.tsv"))
            .expect("images.tsv")
            .lines()
            .map(|l| l.split('\t').next().expect("sha").to_string())
            .collect();
        set.into_iter().collect()
    };
    let before = listed(&all);
    // An evaluation folder holding the first sample image (both tasks use that picture), and a
    // list naming another picture by hash.
    let eval_dir = tmp.path().join("eval-images/nested");
    fs::create_dir_all(&eval_dir).expect("dir");
    let first = &sample_pairs()[0];
    fs::copy(&first.image, eval_dir.join(format!("x.{}", first.ext()))).expect("copy");
    let out = tmp.path().join("excl");
    let r0 = sft_build(
        &[
            &[p(&out).as_str()][..],
            &common[..],
            &["--exclude", &p(&tmp.path().join("eval-images"))],
        ]
        .concat(),
    );
    let after_folder = listed(&out);
    let gone: Vec<&String> = before
        .iter()
        .filter(|h| !after_folder.contains(h))
        .collect();
    assert_eq!(gone.len(), 1, "one picture left out: {r0}");
    assert_eq!(r0["excluded_images"], 2, "its copy in each task: {r0}");
    assert!(r0["excluded_examples"].as_u64() > Some(0), "{r0}");
    let other = after_folder[0].clone();
    let list = tmp.path().join("hashes.txt");
    fs::write(
        &list,
        format!("# evaluation images\n{other}\tsomewhere/x.jpg\n"),
    )
    .expect("list");
    let r = sft_build(
        &[
            &[p(&out).as_str(), "--rebuild"][..],
            &common[..],
            &[
                "--exclude",
                &p(&tmp.path().join("eval-images")),
                "--exclude",
                &p(&list),
            ],
        ]
        .concat(),
    );
    let after = listed(&out);
    assert_eq!(after.len(), before.len() - 2, "{r}");
    assert_eq!(r["excluded_images"], 4, "{r}");
    assert!(!after.contains(&other) && !after.contains(gone[0]));
    let drawn: u64 = r["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .flat_map(|t| t["drawn"].as_array().expect("drawn").clone())
        .map(|d| d.as_u64().expect("n"))
        .sum();
    let written =
        r["train"]["examples"].as_u64().expect("n") + r["val"]["examples"].as_u64().expect("n");
    let skipped = r["train"]["skipped_too_long"].as_u64().expect("n")
        + r["val"]["skipped_too_long"].as_u64().expect("n");
    let excluded = r["excluded_examples"].as_u64().expect("n");
    assert!(
        excluded > r0["excluded_examples"].as_u64().expect("n"),
        "{r}"
    );
    assert_eq!(written + skipped + excluded, drawn, "{r}");
    let record: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("sft.json")).expect("record")).expect("json");
    assert_eq!(
        record["exclude"].as_array().map(Vec::len),
        Some(2),
        "{record}"
    );
    // A list that is not one is refused, naming the line.
    fs::write(&list, "not-a-hash\n").expect("list");
    let refused = run_err(
        &[
            &["sft", "build", &p(&tmp.path().join("bad"))][..],
            &common[..],
            &["--exclude", &p(&list)],
        ]
        .concat(),
    );
    assert!(
        refused.contains("line 1") && refused.contains("hashes.txt"),
        "{refused}"
    );
}

fn write_parquet(path: &Path, columns: Vec<(&str, arrow_array::ArrayRef)>) {
    let batch = arrow_array::RecordBatch::try_from_iter(columns).expect("batch");
    let mut w = parquet::arrow::ArrowWriter::try_new(
        fs::File::create(path).expect("create"),
        batch.schema(),
        None,
    )
    .expect("writer");
    w.write(&batch).expect("write");
    w.close().expect("close");
}

/// Images stored inside files: captions from a WebDataset folder and a Parquet table (any
/// `cm3 ingest` source), InstructPix2Pix triplets from a Parquet table (Hugging Face `Image`
/// structs and raw bytes) and from WebDataset tars.
#[test]
fn tables_and_tars_are_read() {
    use arrow_array::{ArrayRef, BinaryArray, StringArray, StructArray};
    use arrow_schema::{DataType, Field};
    use std::sync::Arc;
    runtime();
    let tmp = tempfile::tempdir().expect("tmp");
    let ds = prepared(tmp.path(), 16);
    let pairs = sample_pairs();
    let bytes: Vec<Vec<u8>> = pairs[..6]
        .iter()
        .map(|p| fs::read(&p.image).expect("image"))
        .collect();
    // Captioning: 6 pairs as two WebDataset tars, 4 as a Parquet table of bytes.
    write_webdataset(&tmp.path().join("wds"), &pairs[..6], 3);
    let captions = tmp.path().join("captions.parquet");
    write_parquet(
        &captions,
        vec![
            (
                "jpg",
                Arc::new(BinaryArray::from_iter_values(bytes[2..].iter())) as ArrayRef,
            ),
            (
                "caption",
                Arc::new(StringArray::from_iter_values(
                    pairs[2..6].iter().map(|p| p.caption.clone()),
                )) as ArrayRef,
            ),
        ],
    );
    // Editing: each image edited into the next; the source as Hugging Face Image structs.
    let edits = tmp.path().join("edits.parquet");
    let source = StructArray::from(vec![
        (
            Arc::new(Field::new("bytes", DataType::Binary, true)),
            Arc::new(BinaryArray::from_iter_values(bytes[..5].iter())) as ArrayRef,
        ),
        (
            Arc::new(Field::new("path", DataType::Utf8, true)),
            Arc::new(StringArray::from_iter_values(
                (0..5).map(|i| format!("{i}.jpg")),
            )) as ArrayRef,
        ),
    ]);
    write_parquet(
        &edits,
        vec![
            ("input_image", Arc::new(source) as ArrayRef),
            (
                "edit_prompt",
                Arc::new(StringArray::from_iter_values(
                    (0..5).map(|i| format!("turn it into picture {}", i + 1)),
                )) as ArrayRef,
            ),
            (
                "edited_image",
                Arc::new(BinaryArray::from_iter_values(bytes[1..6].iter())) as ArrayRef,
            ),
        ],
    );
    let out = tmp.path().join("sft");
    let r = sft_build(&[
        &p(&out),
        "--from",
        &p(&ds),
        "--task",
        &format!("coco={}", p(&tmp.path().join("wds"))),
        "--task",
        &format!("flickr30k={}", p(&captions)),
        "--task",
        &format!("instructpix2pix={}", p(&edits)),
    ]);
    let tasks = r["tasks"].as_array().expect("tasks");
    let sizes: Vec<u64> = tasks
        .iter()
        .map(|t| t["examples"].as_u64().expect("n"))
        .collect();
    assert_eq!(sizes, vec![6, 4, 5], "{r}");
    // The same six pictures, whichever file held them.
    assert_eq!(r["images_rejected"], 0, "{r}");
    let listing = fs::read_to_string(out.join("images.tsv")).expect("images.tsv");
    let distinct: std::collections::BTreeSet<&str> = listing
        .lines()
        .filter_map(|l| l.split('\t').next())
        .collect();
    assert_eq!(distinct.len(), 6, "{listing}");
    assert!(listing.contains("edits.parquet#0/input_image"), "{listing}");
    assert!(listing.contains(".tar#"), "{listing}");
    // The scratch folder of extracted images is gone.
    let leftovers: Vec<String> = fs::read_dir(tmp.path())
        .expect("dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // InstructPix2Pix as WebDataset: <key>.source.jpg, <key>.edited.png, <key>.txt.
    let tars = tmp.path().join("edit-tars");
    fs::create_dir_all(&tars).expect("dir");
    // Four samples, each image edited into the next; the instruction from `instruction(i)`.
    let edit_tar = |instruction: &dyn Fn(usize) -> (String, Vec<u8>)| {
        let mut b = tar::Builder::new(fs::File::create(tars.join("00000.tar")).expect("tar"));
        for i in 0..4 {
            tar_add(
                &mut b,
                &format!("s{i}.source.{}", pairs[i].ext()),
                &bytes[i],
            );
            tar_add(
                &mut b,
                &format!("s{i}.edited.{}", pairs[i + 1].ext()),
                &bytes[i + 1],
            );
            let (name, text) = instruction(i);
            tar_add(&mut b, &format!("s{i}.{name}"), &text);
        }
        b
    };
    let mut b = edit_tar(&|i| {
        (
            "txt".into(),
            format!("make it picture {}", i + 1).into_bytes(),
        )
    });
    // A sample without its edited image is named, not skipped.
    tar_add(
        &mut b,
        &format!("broken.source.{}", pairs[0].ext()),
        &bytes[0],
    );
    tar_add(&mut b, "broken.txt", b"make it");
    b.finish().expect("finish");
    let bad = run_err(&[
        "sft",
        "build",
        &p(&tmp.path().join("sft-tar")),
        "--from",
        &p(&ds),
        "--task",
        &format!("instructpix2pix={}", p(&tars)),
    ]);
    assert!(
        bad.contains("sample broken") && bad.contains("00000.tar"),
        "{bad}"
    );
    let mut b = edit_tar(&|_| {
        (
            "json".into(),
            br#"{"edit_prompt": "make it brighter"}"#.to_vec(),
        )
    });
    b.finish().expect("finish");
    let r = sft_build(&[
        &p(&tmp.path().join("sft-tar")),
        "--from",
        &p(&ds),
        "--task",
        &format!("instructpix2pix={}", p(&tars)),
    ]);
    assert_eq!(r["tasks"][0]["examples"], 4, "{r}");
    // Eight members, five pictures (each edited image is the next sample's source).
    assert_eq!(r["images"], 8, "{r}");
    let listing = fs::read_to_string(tmp.path().join("sft-tar/images.tsv")).expect("images.tsv");
    let distinct: std::collections::BTreeSet<&str> = listing
        .lines()
        .filter_map(|l| l.split('\t').next())
        .collect();
    assert_eq!(distinct.len(), 5, "{listing}");
    assert!(listing.contains("00000.tar#s3.edited."), "{listing}");
}
