//! End-to-end tests of `cm3 ingest` on the embedded sample, in every source format, on hostile
//! input, on re-runs, on a crash, and split across workers.
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use arrow_array::{Array, BinaryArray, ListArray};
use cm3_core::schema::{column, read_columns};
use common::*;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// (caption, image sha256, license) of every row: what must agree across source formats.
fn content(rows: &[Row]) -> BTreeSet<(String, String, Option<String>)> {
    rows.iter()
        .map(|r| (r.caption.clone(), r.sha256.clone(), r.license.clone()))
        .collect()
}

#[test]
fn sample_folder_ingests_every_pair() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ds = tmp.path().join("ds");
    let pairs = sample_pairs();
    run_ok(&[
        "ingest",
        "--input",
        s(&sample_dir()),
        "--out",
        s(&ds),
        "--no-progress",
    ]);
    let rows = read_rows(&ds);
    assert_eq!(rows.len(), pairs.len());
    assert!(read_rejects(&ds).is_empty());
    let ids: BTreeSet<u64> = rows.iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), rows.len(), "ids are unique");
    for p in &pairs {
        let r = rows
            .iter()
            .find(|r| r.key == p.stem)
            .unwrap_or_else(|| panic!("row for {}", p.stem));
        assert_eq!(
            r.caption,
            p.caption.split_whitespace().collect::<Vec<_>>().join(" ")
        );
        assert_eq!(r.license.as_deref(), Some(p.license().as_str()));
        assert_eq!(
            (r.orig_width as u64, r.orig_height as u64),
            (
                p.meta["width"].as_u64().expect("w"),
                p.meta["height"].as_u64().expect("h")
            )
        );
        assert_eq!(r.width, 256);
    }
    // The stored images are real 256x256 JPEGs whose checksum is the recorded one.
    for f in shard_files(&ds) {
        for b in read_columns(&f, &["image", "sha256"]).expect("read") {
            let img = column::<BinaryArray>(&b, "image").expect("image");
            for i in 0..b.num_rows() {
                let bytes = img.value(i);
                assert_eq!(
                    image::guess_format(bytes).ok(),
                    Some(image::ImageFormat::Jpeg)
                );
                let d = image::load_from_memory(bytes).expect("decode");
                assert_eq!((d.width(), d.height()), (256, 256));
            }
        }
    }
    let m = manifest(&ds);
    assert_eq!(m["stages"]["ingest"]["totals"]["rows"], pairs.len());
    assert_eq!(m["stages"]["ingest"]["config"]["image_size"], 256);
    // inspect: human and JSON views of the same manifest.
    let human = String::from_utf8(run_ok(&["inspect", s(&ds)]).stdout).expect("utf8");
    assert!(
        human.contains("stage ingest") && human.contains(&format!("rows     {}", pairs.len())),
        "{human}"
    );
    let js: serde_json::Value =
        serde_json::from_slice(&run_ok(&["inspect", s(&ds), "--json"]).stdout).expect("json");
    assert_eq!(
        js["manifest"]["stages"]["ingest"]["totals"]["rows"],
        pairs.len()
    );
}

#[test]
fn every_source_format_gives_the_same_pairs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pairs = sample_pairs();
    let ingest = |name: &str, extra: &[&str]| {
        let ds = tmp.path().join(format!("ds-{name}"));
        let mut args = vec!["ingest", "--out", s(&ds), "--no-progress"];
        args.extend_from_slice(extra);
        run_ok(&args);
        read_rows(&ds)
    };
    let folder = ingest(
        "folder",
        &["--input", s(&sample_dir()), "--format", "folder"],
    );
    let want = content(&folder);

    // WebDataset: a folder of tars, as img2dataset writes them.
    let wds = tmp.path().join("wds");
    write_webdataset(&wds, &pairs, 10);
    assert_eq!(content(&ingest("wds", &["--input", s(&wds)])), want);

    // JSONL and CSV manifests with relative image paths and a license column.
    let man = tmp.path().join("manifests");
    fs::create_dir_all(&man).expect("mkdir");
    for p in &pairs {
        fs::copy(&p.image, man.join(p.image.file_name().expect("name"))).expect("copy");
    }
    let mut jsonl = fs::File::create(man.join("pairs.jsonl")).expect("jsonl");
    let mut csv = String::from("file,text,license,url\n");
    for p in &pairs {
        let name = p
            .image
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let line = serde_json::json!({"image": name, "caption": p.caption, "license": p.license(), "key": p.stem});
        writeln!(jsonl, "{line}").expect("write");
        csv.push_str(&format!(
            "{name},\"{}\",{},x\n",
            p.caption.replace('"', "\"\""),
            p.license()
        ));
    }
    drop(jsonl);
    fs::write(man.join("pairs.csv"), csv).expect("csv");
    assert_eq!(
        content(&ingest("jsonl", &["--input", s(&man.join("pairs.jsonl"))])),
        want
    );
    assert_eq!(
        content(&ingest("csv", &["--input", s(&man.join("pairs.csv"))])),
        want
    );

    // Parquet manifest with the image bytes inline.
    let pq = man.join("pairs.parquet");
    write_parquet_manifest(&pq, &pairs);
    assert_eq!(content(&ingest("parquet", &["--input", s(&pq)])), want);

    // COCO captions JSON + images/ folder: one pair per caption, or per image.
    let coco = tmp.path().join("coco");
    fs::create_dir_all(coco.join("images")).expect("mkdir");
    let mut images = Vec::new();
    let mut anns = Vec::new();
    for (i, p) in pairs.iter().enumerate() {
        let file = p
            .image
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        fs::copy(&p.image, coco.join("images").join(&file)).expect("copy");
        let id = p.meta["image_id"].as_u64().unwrap_or(900_000 + i as u64);
        images.push(serde_json::json!({"id": id, "file_name": file, "license": 4, "flickr_url": p.meta["url"]}));
        for (j, c) in p.all_captions().iter().enumerate() {
            anns.push(serde_json::json!({"id": id * 10 + j as u64, "image_id": id, "caption": c}));
        }
    }
    let n_captions = anns.len();
    let doc = serde_json::json!({
        "info": {}, "images": images, "annotations": anns,
        "licenses": [{"id": 4, "name": "Attribution License", "url": "http://creativecommons.org/licenses/by/2.0/"}],
    });
    fs::write(coco.join("captions_train2017.json"), doc.to_string()).expect("coco json");
    let per_caption = ingest("coco", &["--input", s(&coco)]);
    assert_eq!(per_caption.len(), n_captions);
    let want_images: BTreeSet<&String> = folder.iter().map(|r| &r.sha256).collect();
    let got_images: BTreeSet<&String> = per_caption.iter().map(|r| &r.sha256).collect();
    assert_eq!(got_images, want_images);
    assert!(
        per_caption
            .iter()
            .all(|r| r.license.as_deref() == Some("CC-BY-2.0"))
    );
    let ds_img = tmp.path().join("ds-coco-img");
    run_ok(&[
        "ingest",
        "--input",
        s(&coco.join("captions_train2017.json")),
        "--coco-pairs",
        "per-image",
        "--out",
        s(&ds_img),
        "--no-progress",
    ]);
    let per_image = read_rows(&ds_img);
    assert_eq!(per_image.len(), pairs.len());
    let alts: usize = shard_files(&ds_img)
        .iter()
        .flat_map(|f| read_columns(f, &["alt_captions"]).expect("read"))
        .map(|b| {
            let l = column::<ListArray>(&b, "alt_captions").expect("list");
            (0..l.len()).map(|i| l.value(i).len()).sum::<usize>()
        })
        .sum();
    assert_eq!(
        alts + pairs.len(),
        n_captions,
        "per-image rows keep every caption"
    );
}

fn write_parquet_manifest(path: &Path, pairs: &[SamplePair]) {
    use arrow_array::{RecordBatch, StringArray};
    use std::sync::Arc;
    let images: Vec<Vec<u8>> = pairs
        .iter()
        .map(|p| fs::read(&p.image).expect("image"))
        .collect();
    let batch = RecordBatch::try_from_iter(vec![
        (
            "key",
            Arc::new(StringArray::from_iter_values(
                pairs.iter().map(|p| p.stem.clone()),
            )) as _,
        ),
        (
            "jpg",
            Arc::new(BinaryArray::from_iter_values(images.iter())) as _,
        ),
        (
            "caption",
            Arc::new(StringArray::from_iter_values(
                pairs.iter().map(|p| p.caption.clone()),
            )) as _,
        ),
        (
            "LICENSE",
            Arc::new(StringArray::from_iter_values(
                pairs.iter().map(|p| p.license()),
            )) as _,
        ),
    ])
    .expect("batch");
    let f = fs::File::create(path).expect("create");
    let mut w = parquet::arrow::ArrowWriter::try_new(f, batch.schema(), None).expect("writer");
    w.write(&batch).expect("write");
    w.close().expect("close");
}

/// A PNG that declares `w` x `h` pixels but holds no real data: a decompression bomb's header.
fn bomb_png(w: u32, h: u32) -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut c = 0xffff_ffffu32;
        for &b in data {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    out.extend_from_slice(&13u32.to_be_bytes());
    out.extend_from_slice(&ihdr);
    out.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    // A little compressed data, as a real bomb has: the decoder must refuse before inflating it.
    let mut idat = b"IDAT".to_vec();
    idat.extend_from_slice(&[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    out.extend_from_slice(&8u32.to_be_bytes());
    out.extend_from_slice(&idat);
    out.extend_from_slice(&crc32(&idat).to_be_bytes());
    out.extend_from_slice(b"\0\0\0\0IEND\xaeB`\x82");
    out
}

#[test]
fn hostile_inputs_become_rejects_with_reasons() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pairs = sample_pairs();
    let good = fs::read(&pairs[0].image).expect("image");
    let other = fs::read(&pairs[1].image).expect("image");
    let tar_path = tmp.path().join("hostile.tar");
    {
        let mut b = tar::Builder::new(fs::File::create(&tar_path).expect("tar"));
        tar_add(&mut b, "a.jpg", &good);
        tar_add(&mut b, "a.txt", b"a good pair");
        tar_add(&mut b, "b.jpg", &good[..good.len() / 3]);
        tar_add(&mut b, "b.txt", b"truncated image");
        tar_add(&mut b, "c.jpg", b"");
        tar_add(&mut b, "c.txt", b"zero-byte image");
        tar_add(&mut b, "d.jpg", b"this is not an image at all");
        tar_add(&mut b, "d.txt", b"garbage image");
        tar_add(&mut b, "e.png", &bomb_png(60_000, 60_000));
        tar_add(&mut b, "e.txt", b"decompression bomb");
        tar_add(&mut b, "/tmp/cm3-evil.jpg", &good);
        tar_add(&mut b, "../cm3-escape.txt", b"escape");
        tar_add(&mut b, "f.jpg", &other);
        tar_add(&mut b, "g.txt", b"caption without image");
        tar_add(&mut b, "h.jpg", &other);
        tar_add(&mut b, "h.txt", b"caf\xe9 au lait \xff");
        tar_add(&mut b, "i.jpg", &good);
        tar_add(&mut b, "i.txt", b"  a good\n pair ");
        b.finish().expect("finish");
    }
    let ds = tmp.path().join("ds");
    let out = run_ok(&[
        "ingest",
        "--input",
        s(&tar_path),
        "--out",
        s(&ds),
        "--no-progress",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let rows = read_rows(&ds);
    let keys: BTreeSet<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, BTreeSet::from(["a", "h"]), "{stderr}");
    let repaired = rows.iter().find(|r| r.key == "h").expect("h");
    assert!(repaired.caption_repaired);
    assert_eq!(repaired.caption, "caf\u{fffd} au lait \u{fffd}");
    let rejects = read_rejects(&ds);
    let want: BTreeMap<String, usize> = [
        ("corrupt-image", 1),
        ("empty-file", 1),
        ("unsupported-format", 1),
        ("too-many-pixels", 1),
        ("unsafe-path", 2),
        ("missing-caption", 1),
        ("missing-image", 1),
        ("duplicate", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(reasons(&rejects), want, "{rejects:#?}");
    let dup = rejects
        .iter()
        .find(|r| r["reason"] == "duplicate")
        .expect("dup");
    let kept = rows.iter().find(|r| r.key == "a").expect("a").id;
    assert_eq!(dup["key"], "i");
    assert_eq!(dup["duplicate_of"], kept);
    assert_eq!(dup["detail"], format!("duplicate-of {kept}"));
    // Every reject names its input and key, and a log line says why.
    assert!(rejects.iter().all(|r| {
        r["source"]
            .as_str()
            .is_some_and(|s| s.ends_with("hostile.tar"))
    }));
    assert!(stderr.contains("too-many-pixels"), "{stderr}");
    let m = manifest(&ds);
    let totals = &m["stages"]["ingest"]["totals"];
    assert_eq!(totals["rejects"], 9);
    assert_eq!(totals["rejects_by_reason"]["unsafe-path"], 2);
    assert_eq!(totals["counters"]["captions_repaired"], 1);
    // Nothing was written outside the dataset.
    assert!(!tmp.path().join("cm3-escape.txt").exists());
    assert!(!Path::new("/tmp/cm3-evil.jpg").exists());

    // --invalid-utf8 reject turns the repaired caption into a reject.
    let ds2 = tmp.path().join("ds2");
    run_ok(&[
        "ingest",
        "--input",
        s(&tar_path),
        "--out",
        s(&ds2),
        "--invalid-utf8",
        "reject",
        "--no-progress",
    ]);
    assert_eq!(
        reasons(&read_rejects(&ds2)).get("invalid-utf8-caption"),
        Some(&1)
    );

    // --strict stops at the first reject, names it, and records no shard.
    let ds3 = tmp.path().join("ds3");
    let err = run_err(&[
        "ingest",
        "--input",
        s(&tar_path),
        "--out",
        s(&ds3),
        "--strict",
        "--no-progress",
    ]);
    assert!(
        err.contains("--strict") && err.contains("hostile.tar") && err.contains("key b"),
        "{err}"
    );
    assert!(shard_files(&ds3).is_empty());
}

#[test]
fn truncated_archive_keeps_complete_members_and_records_the_rest() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pairs = sample_pairs();
    let tars = write_webdataset(&tmp.path().join("wds"), &pairs[..6], 6);
    let bytes = fs::read(&tars[0]).expect("tar");
    // Cut inside the image data of the fourth member group.
    let cut = tmp.path().join("cut.tar");
    let mut pos = 0usize;
    let mut starts = Vec::new();
    while pos + 512 <= bytes.len() && bytes[pos] != 0 {
        starts.push(pos);
        let size = usize::from_str_radix(
            std::str::from_utf8(&bytes[pos + 124..pos + 135])
                .expect("size")
                .trim_matches(char::from(0))
                .trim(),
            8,
        )
        .expect("octal");
        pos += 512 + size.div_ceil(512) * 512;
    }
    let fourth_image = starts[9];
    fs::write(&cut, &bytes[..fourth_image + 512 + 100]).expect("write");
    let ds = tmp.path().join("ds");
    run_ok(&[
        "ingest",
        "--input",
        s(&cut),
        "--out",
        s(&ds),
        "--no-progress",
    ]);
    assert_eq!(read_rows(&ds).len(), 3);
    let rejects = read_rejects(&ds);
    assert_eq!(
        reasons(&rejects).get("malformed-record"),
        Some(&1),
        "{rejects:#?}"
    );
    assert!(
        rejects[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("truncated")),
        "{rejects:#?}"
    );
}

#[test]
fn nothing_usable_is_an_error_but_keeps_the_record() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let input = tmp.path().join("bad");
    fs::create_dir_all(&input).expect("mkdir");
    fs::write(input.join("x.jpg"), b"\xff\xd8\xff\xe0 broken").expect("w");
    fs::write(input.join("x.txt"), b"a caption").expect("w");
    fs::write(input.join("y.txt"), b"a caption without image").expect("w");
    let ds = tmp.path().join("ds");
    let err = run_err(&[
        "ingest",
        "--input",
        s(&input),
        "--out",
        s(&ds),
        "--no-progress",
    ]);
    assert!(err.contains("nothing usable"), "{err}");
    assert_eq!(read_rejects(&ds).len(), 2);
    // A missing input path is an error that names it.
    let err = run_err(&[
        "ingest",
        "--input",
        s(&tmp.path().join("nope")),
        "--out",
        s(&ds),
    ]);
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn require_license_rejects_unlicensed_pairs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let input = tmp.path().join("in");
    fs::create_dir_all(&input).expect("mkdir");
    let pairs = sample_pairs();
    for (i, p) in pairs[..3].iter().enumerate() {
        fs::copy(&p.image, input.join(format!("p{i}.{}", p.ext()))).expect("copy");
        fs::write(input.join(format!("p{i}.txt")), &p.caption).expect("w");
        if i > 0 {
            fs::write(input.join(format!("p{i}.json")), p.meta.to_string()).expect("w");
        }
    }
    let ds = tmp.path().join("ds");
    run_ok(&[
        "ingest",
        "--input",
        s(&input),
        "--out",
        s(&ds),
        "--require-license",
        "--no-progress",
    ]);
    assert_eq!(read_rows(&ds).len(), 2);
    let rejects = read_rejects(&ds);
    assert_eq!(
        reasons(&rejects),
        BTreeMap::from([("no-license".to_string(), 1)])
    );
    assert_eq!(rejects[0]["key"], "p0");
}

#[test]
fn rerun_is_incremental_and_byte_identical() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pairs = sample_pairs();
    let wds = tmp.path().join("wds");
    let tars = write_webdataset(&wds, &pairs[..24], 8);
    let week2 = write_webdataset(&tmp.path().join("week2"), &pairs[24..], 8);
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    let args = |ds: &Path| {
        vec![
            "ingest".to_string(),
            "--input".into(),
            s(&wds).into(),
            "--out".into(),
            s(ds).into(),
            "--shard-rows".into(),
            "5".into(),
            "--no-progress".into(),
        ]
    };
    let run = |v: Vec<String>| run_ok(&v.iter().map(String::as_str).collect::<Vec<_>>());
    run(args(&a));
    let first = output_bytes(&a);
    assert_eq!(
        first.keys().filter(|k| k.starts_with("pairs/")).count(),
        6,
        "3 tars x 2 shards"
    );
    // A second run does nothing and changes nothing.
    let out = run(args(&a));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("0 rows and 0 rejects written in 0 shard(s) (6 already done)")
    );
    assert_eq!(output_bytes(&a), first);
    // An independent run gives the same bytes.
    run(args(&b));
    assert_eq!(output_bytes(&b), first);
    assert_eq!(
        manifest(&a)["stages"]["ingest"]["shards"],
        manifest(&b)["stages"]["ingest"]["shards"]
    );
    // New data next week: only the new shards are written; the old ones are untouched.
    let mut v = args(&a);
    v.insert(3, s(&week2[0]).to_string());
    let out = run(v);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("8 rows and 0 rejects written in 2 shard(s) (6 already done)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = output_bytes(&a);
    for (k, bytes) in &first {
        assert_eq!(after.get(k), Some(bytes), "{k} changed");
    }
    assert_eq!(read_rows(&a).len(), 32);
    // Another configuration is refused, naming the difference, until --rebuild.
    let mut v = args(&a);
    v.extend(["--image-size".into(), "128".into()]);
    let err = run_err(&v.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        err.contains("image_size: recorded 256 , given 128") && err.contains("--rebuild"),
        "{err}"
    );
    assert_eq!(output_bytes(&a), after, "a refused run writes nothing");
    v.push("--rebuild".into());
    run(v);
    let rows = read_rows(&a);
    assert_eq!(rows.len(), 24);
    assert!(rows.iter().all(|r| r.width == 128));
    // A changed input is refused too.
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(&tars[0])
        .expect("open");
    f.write_all(&[0u8; 1024]).expect("append");
    drop(f);
    let mut v = args(&a);
    v.extend(["--image-size".into(), "128".into()]);
    let err = run_err(&v.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.contains("changed since it was processed"), "{err}");
}

/// The sampling factors (horizontal << 4 | vertical) of the first component of a JPEG's frame
/// header: 0x22 for 4:2:0 colour, 0x11 for 4:4:4.
fn luma_sampling(jpeg: &[u8]) -> u8 {
    let mut i = 2;
    while i + 4 <= jpeg.len() {
        assert_eq!(jpeg[i], 0xFF, "not at a marker at byte {i}");
        let marker = jpeg[i + 1];
        let len = usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
        if matches!(marker, 0xC0..=0xC2) {
            // Length, precision, height, width, component count, then (id, sampling, table).
            return jpeg[i + 2 + 2 + 1 + 2 + 2 + 1 + 1];
        }
        i += 2 + len;
    }
    panic!("no frame header")
}

/// The luma sampling of every stored image of a dataset, by shard file name.
fn samplings(dataset: &Path) -> BTreeMap<String, BTreeSet<u8>> {
    let mut m = BTreeMap::new();
    for f in shard_files(dataset) {
        let name = f.file_name().expect("name").to_string_lossy().into_owned();
        for b in read_columns(&f, &["image"]).expect("read") {
            let img = column::<BinaryArray>(&b, "image").expect("image");
            for i in 0..b.num_rows() {
                m.entry(name.clone())
                    .or_insert_with(BTreeSet::new)
                    .insert(luma_sampling(img.value(i)));
            }
        }
    }
    m
}

#[test]
fn jpeg_subsampling_is_recorded_and_older_datasets_keep_their_rule() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pairs = sample_pairs();
    let wds = tmp.path().join("wds");
    write_webdataset(&wds, &pairs[..8], 8);
    let week2 = write_webdataset(&tmp.path().join("week2"), &pairs[8..16], 8);
    let run = |ds: &Path, extra: &[&str]| {
        let mut v = vec![
            "ingest",
            "--input",
            s(&wds),
            "--out",
            s(ds),
            "--no-progress",
        ];
        v.extend_from_slice(extra);
        run_ok(&v)
    };
    let all = |m: &BTreeMap<String, BTreeSet<u8>>| -> BTreeSet<u8> {
        m.values().flatten().copied().collect()
    };
    // A new dataset: 4:2:0, recorded.
    let new = tmp.path().join("new");
    run(&new, &[]);
    assert_eq!(
        manifest(&new)["stages"]["ingest"]["config"]["jpeg_subsampling"],
        "4:2:0"
    );
    assert_eq!(all(&samplings(&new)), BTreeSet::from([0x22]));
    // Asking for the other on it is a changed configuration, refused by name.
    let err = run_err(&[
        "ingest",
        "--input",
        s(&wds),
        "--out",
        s(&new),
        "--no-progress",
        "--jpeg-subsampling",
        "4:4:4",
    ]);
    assert!(err.contains("jpeg_subsampling"), "{err}");
    // 4:4:4 when asked for.
    let full = tmp.path().join("full");
    run(&full, &["--jpeg-subsampling", "4:4:4"]);
    assert_eq!(all(&samplings(&full)), BTreeSet::from([0x11]));

    // A dataset made before the setting existed records none; its pure-Rust encoder wrote
    // 4:4:4 at quality 95. Made here as such: 4:4:4, then the setting taken out of the record.
    let old = tmp.path().join("old");
    run(
        &old,
        &["--jpeg-subsampling", "4:4:4", "--jpeg-codec", "rust"],
    );
    let path = old.join("manifest.json");
    let mut m = manifest(&old);
    let config = m["stages"]["ingest"]["config"]
        .as_object_mut()
        .expect("config object");
    assert!(config.remove("jpeg_subsampling").is_some());
    fs::write(&path, serde_json::to_vec_pretty(&m).expect("json")).expect("write manifest");
    let before = output_bytes(&old);
    // Next week's run with the defaults extends it with the same rule, not refused.
    let out = run_ok(&[
        "ingest",
        "--input",
        s(&wds),
        s(&week2[0]),
        "--out",
        s(&old),
        "--no-progress",
        "--jpeg-codec",
        "rust",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("1 already done"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = samplings(&old);
    assert_eq!(after.len(), 2, "{after:?}");
    assert_eq!(all(&after), BTreeSet::from([0x11]));
    for (k, bytes) in &before {
        assert_eq!(output_bytes(&old).get(k), Some(bytes), "{k} changed");
    }
    assert!(
        manifest(&old)["stages"]["ingest"]["config"]
            .get("jpeg_subsampling")
            .is_none(),
        "the record keeps saying nothing"
    );
}

/// A new dataset gets this build's fastest codec (`rust-dct` without the `turbojpeg` feature),
/// recorded by name; a dataset that recorded `rust` (every one a pure-Rust cm3 made before
/// `rust-dct`) is extended with `rust` when the flag is not given, its shards untouched; asking
/// it for another codec is refused by name.
#[test]
fn jpeg_codec_is_recorded_and_older_datasets_keep_theirs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pairs = sample_pairs();
    let wds = tmp.path().join("wds");
    write_webdataset(&wds, &pairs[..8], 8);
    let week2 = write_webdataset(&tmp.path().join("week2"), &pairs[8..16], 8);
    fn ingest<'a>(ds: &'a Path, inputs: &[&'a Path], extra: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec!["ingest", "--input"];
        v.extend(inputs.iter().map(|p| s(p)));
        v.extend_from_slice(&["--out", s(ds), "--no-progress"]);
        v.extend_from_slice(extra);
        v
    }
    let codec = |ds: &Path| manifest(ds)["stages"]["ingest"]["config"]["jpeg_codec"].clone();
    let new = tmp.path().join("new");
    run_ok(&ingest(&new, &[&wds], &[]));
    assert_eq!(codec(&new), "rust-dct");

    let old = tmp.path().join("old");
    run_ok(&ingest(&old, &[&wds], &["--jpeg-codec", "rust"]));
    let before = output_bytes(&old);
    let out = run_ok(&ingest(&old, &[&wds, &week2[0]], &[]));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("1 already done"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(codec(&old), "rust", "the record keeps its codec");
    let after = output_bytes(&old);
    assert!(after.len() > before.len(), "week 2 added");
    for (k, bytes) in &before {
        assert_eq!(after.get(k), Some(bytes), "{k} changed");
    }
    let err = run_err(&ingest(
        &old,
        &[&wds, &week2[0]],
        &["--jpeg-codec", "rust-dct"],
    ));
    assert!(err.contains("jpeg_codec"), "{err}");
}

#[test]
fn crash_mid_run_then_resume_matches_uninterrupted_run() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pairs = sample_pairs();
    // 4 copies of the sample under different keys: 128 records, 16 shards of 8.
    let many: Vec<SamplePair> = (0..4).flat_map(|_| pairs.iter().cloned()).collect();
    let wds = tmp.path().join("wds");
    write_webdataset(&wds, &many, 128);
    let args = |ds: &Path, threads: &str| {
        vec![
            "ingest".to_string(),
            "--input".into(),
            s(&wds).into(),
            "--out".into(),
            s(ds).into(),
            "--shard-rows".into(),
            "8".into(),
            "--threads".into(),
            threads.into(),
            "--no-progress".into(),
        ]
    };
    let reference = tmp.path().join("reference");
    run_ok(
        &args(&reference, "2")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );

    let crashed = tmp.path().join("crashed");
    let mut child = cm3().args(args(&crashed, "1")).spawn().expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut killed_mid_run = false;
    while Instant::now() < deadline {
        // The manifest is replaced by a rename, and a journal line cut short is skipped: what is
        // read always parses.
        let recorded = recorded_shards(&crashed)
            .get("ingest")
            .map_or(0, BTreeMap::len);
        if recorded >= 3 {
            if child.try_wait().expect("wait").is_none() {
                child.kill().expect("kill");
                killed_mid_run = true;
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait().expect("reap");
    assert!(
        killed_mid_run,
        "the run finished before it could be killed; the test needs more input"
    );
    let partial = recorded_shards(&crashed)
        .get("ingest")
        .map_or(0, BTreeMap::len);
    assert!(partial < 16, "killed after {partial} shards");

    run_ok(
        &args(&crashed, "2")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert_eq!(output_bytes(&crashed), output_bytes(&reference));
    assert_eq!(
        manifest(&crashed)["stages"]["ingest"]["shards"],
        manifest(&reference)["stages"]["ingest"]["shards"]
    );
    assert_eq!(manifest(&crashed)["stages"]["ingest"]["totals"]["rows"], 32);
    // Only duplicates of the first copy are rejected; nothing is left half-written.
    assert_eq!(reasons(&read_rejects(&crashed)).get("duplicate"), Some(&96));
    for d in ["pairs", "rejects"] {
        for e in fs::read_dir(crashed.join(d)).expect("dir") {
            let name = e.expect("entry").file_name().to_string_lossy().into_owned();
            assert!(!name.contains(".tmp-"), "stale temporary file {name}");
        }
    }
}

#[test]
fn workers_split_the_shards_and_merge() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pairs = sample_pairs();
    let wds = tmp.path().join("wds");
    write_webdataset(&wds, &pairs, 8);
    let base = |ds: &Path| {
        vec![
            "ingest".to_string(),
            "--input".into(),
            s(&wds).into(),
            "--out".into(),
            s(ds).into(),
            "--shard-rows".into(),
            "4".into(),
            "--no-progress".into(),
        ]
    };
    let single = tmp.path().join("single");
    run_ok(&base(&single).iter().map(String::as_str).collect::<Vec<_>>());

    let split = tmp.path().join("split");
    // Both workers at once, as an array job would run them.
    let children: Vec<_> = (0..2)
        .map(|i| {
            let mut v = base(&split);
            v.extend([
                "--num-workers".into(),
                "2".into(),
                "--worker-index".into(),
                i.to_string(),
            ]);
            cm3().args(v).spawn().expect("spawn")
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().expect("wait");
        assert!(out.status.success());
    }
    let mut per_worker = Vec::new();
    for i in 0..2 {
        let m: serde_json::Value = serde_json::from_slice(
            &fs::read(split.join(format!("manifest.d/ingest.w{i}of2.json")))
                .expect("worker manifest"),
        )
        .expect("json");
        let shards: BTreeSet<String> = m["stages"]["ingest"]["shards"]
            .as_object()
            .expect("shards")
            .keys()
            .cloned()
            .collect();
        assert!(!shards.is_empty(), "worker {i} did some work");
        per_worker.push(shards);
    }
    assert!(per_worker[0].is_disjoint(&per_worker[1]));
    assert_eq!(per_worker[0].len() + per_worker[1].len(), 8);
    // A worker of another split would own overlapping shards: refused.
    let mut mixed = base(&split);
    mixed.extend([
        "--num-workers".into(),
        "3".into(),
        "--worker-index".into(),
        "0".into(),
    ]);
    let err = run_err(&mixed.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        err.contains("split across 2 workers") && err.contains("--num-workers 3"),
        "{err}"
    );
    // A single-process run refuses to start before the merge; inspect says what to do.
    let err = run_err(&base(&split).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.contains("cm3 manifest merge"), "{err}");
    assert!(
        String::from_utf8_lossy(&run_ok(&["inspect", s(&split)]).stdout)
            .contains("unmerged worker manifest")
    );
    run_ok(&["manifest", "merge", s(&split)]);
    assert_eq!(output_bytes(&split), output_bytes(&single));
    assert_eq!(
        manifest(&split)["stages"]["ingest"]["shards"],
        manifest(&single)["stages"]["ingest"]["shards"]
    );
    assert_eq!(
        manifest(&split)["stages"]["ingest"]["totals"]["rows"],
        pairs.len()
    );
    // After the merge the dataset continues like any other.
    let out = run_ok(&base(&split).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(String::from_utf8_lossy(&out.stderr).contains("(8 already done)"));
}

#[test]
fn manifest_rows_that_cannot_be_used_are_recorded() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pairs = sample_pairs();
    let dir = tmp.path().join("m");
    fs::create_dir_all(dir.join("a-directory.jpg")).expect("mkdir");
    fs::copy(&pairs[0].image, dir.join("ok.jpg")).expect("copy");
    let lines = [
        r#"{"image": "ok.jpg", "caption": "a usable row"}"#,
        r#"{"image": "missing.jpg", "caption": "points at nothing"}"#,
        r#"{"image": "a-directory.jpg", "caption": "points at a folder"}"#,
        r#"{"image": "ok.jpg", "caption": "   "}"#,
        r#"{"image": "ok.jpg", "caption": "#,
        r#"["not", "an", "object"]"#,
        r#"{"image": "ok.jpg"}"#,
    ];
    fs::write(dir.join("rows.jsonl"), lines.join("\n")).expect("w");
    let ds = tmp.path().join("ds");
    run_ok(&[
        "ingest",
        "--input",
        s(&dir.join("rows.jsonl")),
        "--out",
        s(&ds),
        "--no-progress",
    ]);
    assert_eq!(read_rows(&ds).len(), 1);
    let got = reasons(&read_rejects(&ds));
    let want: BTreeMap<String, usize> = [
        ("missing-image", 1),
        ("unreadable", 1),
        ("empty-caption", 1),
        ("malformed-record", 3),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(got, want);
    // A CSV whose caption column is named differently needs the flag, and says so.
    fs::write(dir.join("rows.csv"), "path,words\nok.jpg,hello\n").expect("w");
    let ds2 = tmp.path().join("ds2");
    let err = run_err(&[
        "ingest",
        "--input",
        s(&dir.join("rows.csv")),
        "--out",
        s(&ds2),
        "--no-progress",
    ]);
    assert!(
        err.contains("no caption column") && err.contains("--caption-column"),
        "{err}"
    );
    run_ok(&[
        "ingest",
        "--input",
        s(&dir.join("rows.csv")),
        "--out",
        s(&ds2),
        "--caption-column",
        "words",
        "--no-progress",
    ]);
    assert_eq!(read_rows(&ds2).len(), 1);
}

#[test]
fn config_file_sets_the_stage_and_rejects_unknown_fields() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = tmp.path().join("ingest.toml");
    fs::write(&cfg, "image_size = 128\nimage_format = \"png\"\nshard_rows = 10\n[columns]\ncaption = \"text\"\n").expect("w");
    let ds = tmp.path().join("ds");
    run_ok(&[
        "ingest",
        "--input",
        s(&sample_dir()),
        "--out",
        s(&ds),
        "--config",
        s(&cfg),
        "--no-progress",
    ]);
    let m = manifest(&ds);
    let stage = &m["stages"]["ingest"];
    assert_eq!(stage["config"]["image_size"], 128);
    assert_eq!(stage["config"]["image_format"], "png");
    assert_eq!(stage["config"]["columns"]["caption"], "text");
    assert_eq!(stage["totals"]["shards"], 4, "32 pairs in shards of 10");
    let f = &shard_files(&ds)[0];
    let b = &read_columns(f, &["image"]).expect("read")[0];
    let img = column::<BinaryArray>(b, "image").expect("image").value(0);
    assert_eq!(image::guess_format(img).ok(), Some(image::ImageFormat::Png));
    assert_eq!(image::load_from_memory(img).expect("png").width(), 128);
    // Flags override the file.
    let ds2 = tmp.path().join("ds2");
    run_ok(&[
        "ingest",
        "--input",
        s(&sample_dir()),
        "--out",
        s(&ds2),
        "--config",
        s(&cfg),
        "--image-size",
        "64",
        "--no-progress",
    ]);
    assert_eq!(
        manifest(&ds2)["stages"]["ingest"]["config"]["image_size"],
        64
    );
    // A misspelt field is an error that names it, before anything is written.
    fs::write(&cfg, "image_sise = 128\n").expect("w");
    let ds3 = tmp.path().join("ds3");
    let err = run_err(&[
        "ingest",
        "--input",
        s(&sample_dir()),
        "--out",
        s(&ds3),
        "--config",
        s(&cfg),
    ]);
    assert!(
        err.contains("image_sise") && err.contains("ingest.toml"),
        "{err}"
    );
    assert!(!ds3.join("manifest.json").exists());
    // inspect refuses a folder that is not a dataset.
    let err = run_err(&["inspect", s(tmp.path())]);
    assert!(err.contains("not a cm3 dataset directory"), "{err}");
}

#[test]
fn parquet_with_hugging_face_image_structs() {
    use arrow_array::{ArrayRef, RecordBatch, StringArray, StructArray};
    use arrow_schema::{DataType, Field};
    use std::sync::Arc;
    let tmp = tempfile::tempdir().expect("tempdir");
    let pairs = sample_pairs();
    let few = &pairs[..4];
    let bytes: Vec<Vec<u8>> = few
        .iter()
        .map(|p| fs::read(&p.image).expect("image"))
        .collect();
    let image = StructArray::from(vec![
        (
            Arc::new(Field::new("bytes", DataType::Binary, true)),
            Arc::new(BinaryArray::from_iter_values(bytes.iter())) as ArrayRef,
        ),
        (
            Arc::new(Field::new("path", DataType::Utf8, true)),
            Arc::new(StringArray::from_iter_values(
                few.iter().map(|p| p.stem.clone()),
            )) as ArrayRef,
        ),
    ]);
    let batch = RecordBatch::try_from_iter(vec![
        ("image", Arc::new(image) as ArrayRef),
        (
            "text",
            Arc::new(StringArray::from_iter_values(
                few.iter().map(|p| p.caption.clone()),
            )) as ArrayRef,
        ),
    ])
    .expect("batch");
    let path = tmp.path().join("hf.parquet");
    let mut w = parquet::arrow::ArrowWriter::try_new(
        fs::File::create(&path).expect("create"),
        batch.schema(),
        None,
    )
    .expect("writer");
    w.write(&batch).expect("write");
    w.close().expect("close");
    let ds = tmp.path().join("ds");
    run_ok(&[
        "ingest",
        "--input",
        s(&path),
        "--out",
        s(&ds),
        "--no-progress",
    ]);
    let rows = read_rows(&ds);
    assert_eq!(rows.len(), 4);
    assert_eq!(
        rows.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
        ["000000000", "000000001", "000000002", "000000003"]
    );
}
