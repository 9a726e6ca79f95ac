//! Task sources in the formats people have, read into the examples a template fills.
//!
//! - **VQA** (`vqa2`, `okvqa`, `vizwiz`): a folder with `questions.json` and `annotations.json`
//!   in the VQA v2 form (OK-VQA uses it too), or VizWiz's one annotations list (`image`,
//!   `question`, `answers`), and the images in `images/` (or the folder itself). A VQA v2 image
//!   is found by its id: the trailing digits of the file name (`COCO_train2014_000000000042.jpg`,
//!   `42.png`). The answer trained on is the annotation's `multiple_choice_answer` (VQA's most
//!   frequent of the ten human answers); without it (OK-VQA), the most frequent answer, ties to
//!   the first given.
//! - **Captioning** (`coco`, `flickr30k`): a folder with a COCO-format captions JSON
//!   (`captions*.json`, there or in `annotations/`) and its images (by `file_name`, in
//!   `images/`, the folder itself or one folder below). One example per caption, as Table 5
//!   counts them (591k COCO examples are 5 captions of 118k images).
//!
//!   Also any source `cm3 ingest` reads (tables, WebDataset; [`crate::embedded`]).
//! - **Long captions**: Image Paragraph (`paragraphs_v1.json`, its `train_split.json` when
//!   present), Localized Narratives (the release's JSONL files, streamed), by image id.
//! - **ScienceQA**: `problems.json` and `images/<split>/<id>/`, the `train` problems that have an
//!   image, written as the ScienceQA release prompts them.
//! - **Editing** (`instructpix2pix`): a JSONL table of paths, a Parquet table, WebDataset tars.
//! - **Image-conditioned generation** (`edge`, `seg`, ...): a JSONL table of (feature image,
//!   caption, image); for `edge`, also a captions folder with the edges computed by cm3.
//! - **Detection**: COCO instances and captions. **OCR**: a JSONL table of (image, text) or
//!   images with the text they show in a `.txt`.
//!
//! Every reader names the file and the entry it cannot use.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Result, SftError};
use crate::templates::{ImageSlot, Task};

/// Largest JSON file read (VQA v2's train annotations are about 0.35 GB).
pub const MAX_JSON_BYTES: u64 = 4 << 30;

/// Where an image document's pixels come from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ImageSource {
    File(PathBuf),
    /// The Canny edges (OpenCV's, ControlNet's thresholds) of this file's normalised image.
    CannyOf(PathBuf),
    /// Bytes stored in a table or tar (`origin`: the file and row or member), extracted to
    /// `file` in the build's scratch folder (see [`crate::embedded`]).
    Embedded {
        origin: String,
        file: PathBuf,
    },
}

impl ImageSource {
    /// The file the pixels are read from.
    pub fn path(&self) -> &Path {
        match self {
            Self::File(p) | Self::CannyOf(p) => p,
            Self::Embedded { file, .. } => file,
        }
    }

    /// Where the image is, as the user's data names it (the origin of an extracted image).
    pub fn origin(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Self::File(p) | Self::CannyOf(p) => p.to_string_lossy(),
            Self::Embedded { origin, .. } => origin.as_str().into(),
        }
    }
}

/// One example of a task's source: the template's fields and images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceExample {
    /// The source's own id (question id, annotation id), for the record.
    pub id: String,
    pub fields: BTreeMap<String, String>,
    pub images: BTreeMap<ImageSlot, ImageSource>,
}

impl SourceExample {
    fn with_image(id: String, fields: BTreeMap<String, String>, image: PathBuf) -> Self {
        Self {
            id,
            fields,
            images: BTreeMap::from([(ImageSlot::Image, ImageSource::File(image))]),
        }
    }

    /// The example's image (the output of the image tasks, the input of the text tasks): what
    /// splits it into training or validation.
    pub fn main_image(&self) -> Option<&ImageSource> {
        self.images
            .get(&ImageSlot::Image)
            .or_else(|| self.images.get(&ImageSlot::Edited))
            .or_else(|| self.images.values().next())
    }
}

fn input(path: &Path, reason: impl Into<String>) -> SftError {
    SftError::Input {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let meta = std::fs::metadata(path).map_err(|e| input(path, e.to_string()))?;
    if !meta.is_file() {
        return Err(input(path, "not a regular file"));
    }
    if meta.len() > MAX_JSON_BYTES {
        return Err(input(
            path,
            format!(
                "{} bytes, over the {MAX_JSON_BYTES} bytes cm3 reads",
                meta.len()
            ),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| input(path, e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| input(path, format!("not the expected JSON: {e}")))
}

/// The one file of `dir` (or `dir/annotations`) whose name is `exact` or contains `part` and
/// ends in `.json`.
fn find_json(dir: &Path, exact: &str, part: &str) -> Result<Option<PathBuf>> {
    if dir.join(exact).is_file() {
        return Ok(Some(dir.join(exact)));
    }
    let mut found = Vec::new();
    for d in [dir.to_path_buf(), dir.join("annotations")] {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let path = e.map_err(|e| input(&d, e.to_string()))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.ends_with(".json") && name.contains(part) && path.is_file() {
                found.push(path);
            }
        }
    }
    found.sort();
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        _ => Err(input(
            dir,
            format!(
                "several *{part}*.json files ({}): keep one, or name it {exact}",
                found
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

fn images_dir(dir: &Path) -> PathBuf {
    let sub = dir.join("images");
    if sub.is_dir() { sub } else { dir.to_path_buf() }
}

const IMAGE_EXTENSIONS: [&str; 6] = ["jpg", "jpeg", "png", "webp", "bmp", "gif"];

/// Image files of `dir` by the trailing digits of their name (the VQA v2 / COCO convention).
fn images_by_id(dir: &Path) -> Result<HashMap<u64, PathBuf>> {
    let mut out = HashMap::new();
    let entries = std::fs::read_dir(dir).map_err(|e| input(dir, e.to_string()))?;
    for e in entries {
        let path = e.map_err(|e| input(dir, e.to_string()))?.path();
        let Some(ext) = path.extension().and_then(|s| s.to_str()) else {
            continue;
        };
        if !IMAGE_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()) || !path.is_file() {
            continue;
        }
        let Some(id) = numeric_id(&path) else {
            continue;
        };
        if let Some(other) = out.insert(id, path.clone()) {
            return Err(input(
                &path,
                format!("a second image with id {id} (also {})", other.display()),
            ));
        }
    }
    Ok(out)
}

/// The numeric id an image file name carries (`COCO_val2014_000000391895.jpg`,
/// `000000391895.jpg`, `391895.png`): its last run of digits, when it has one.
pub fn numeric_id(file: &Path) -> Option<u64> {
    let stem = file.file_stem()?.to_str()?;
    let digits: String = stem
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    digits.parse().ok()
}

/// A JSON id (number or string) as text.
pub fn id_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

#[derive(Deserialize)]
struct Answer {
    answer: String,
}

/// The most frequent answer, ties to the first given.
fn most_frequent(answers: &[Answer]) -> Option<String> {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for a in answers {
        let a = a.answer.trim();
        if a.is_empty() {
            continue;
        }
        match counts.iter_mut().find(|(x, _)| *x == a) {
            Some((_, n)) => *n += 1,
            None => counts.push((a, 1)),
        }
    }
    let best = counts.iter().map(|&(_, n)| n).max()?;
    counts
        .into_iter()
        .find(|&(_, n)| n == best)
        .map(|(a, _)| a.to_string())
}

#[derive(Deserialize)]
struct VqaQuestion {
    question_id: serde_json::Value,
    image_id: serde_json::Value,
    question: String,
}

#[derive(Deserialize)]
struct VqaQuestions {
    questions: Vec<VqaQuestion>,
}

#[derive(Deserialize)]
struct VqaAnnotation {
    question_id: serde_json::Value,
    #[serde(default)]
    multiple_choice_answer: Option<String>,
    #[serde(default)]
    answers: Vec<Answer>,
}

#[derive(Deserialize)]
struct VqaAnnotations {
    annotations: Vec<VqaAnnotation>,
}

#[derive(Deserialize)]
struct VizWizEntry {
    image: String,
    question: String,
    #[serde(default)]
    answers: Vec<Answer>,
}

fn qa(question: &str, answer: String) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("question".to_string(), question.trim().to_string()),
        ("answer".to_string(), answer),
    ])
}

fn read_vqa(dir: &Path) -> Result<Vec<SourceExample>> {
    let annotations = find_json(dir, "annotations.json", "annotations")?
        .ok_or_else(|| input(dir, "no annotations.json (VQA v2 or VizWiz form)"))?;
    let images = images_dir(dir);
    let questions = find_json(dir, "questions.json", "questions")?;
    let Some(questions) = questions else {
        // VizWiz: one list, the image named in each entry.
        let entries: Vec<VizWizEntry> = read_json(&annotations)?;
        let mut out = Vec::with_capacity(entries.len());
        for (i, e) in entries.into_iter().enumerate() {
            let Some(answer) = most_frequent(&e.answers) else {
                continue;
            };
            let name = Path::new(&e.image);
            if name.components().count() != 1 {
                return Err(input(
                    &annotations,
                    format!("entry {i}: image {:?} is not a plain file name", e.image),
                ));
            }
            let image = images.join(name);
            if !image.is_file() {
                return Err(input(&image, format!("entry {i}: no such image")));
            }
            out.push(SourceExample::with_image(
                i.to_string(),
                qa(&e.question, answer),
                image,
            ));
        }
        return Ok(out);
    };
    let qs: VqaQuestions = read_json(&questions)?;
    let anns: VqaAnnotations = read_json(&annotations)?;
    let answers: HashMap<String, String> = anns
        .annotations
        .into_iter()
        .filter_map(|a| {
            let answer = a
                .multiple_choice_answer
                .filter(|m| !m.trim().is_empty())
                .map(|m| m.trim().to_string())
                .or_else(|| most_frequent(&a.answers))?;
            Some((id_text(&a.question_id)?, answer))
        })
        .collect();
    let by_id = images_by_id(&images)?;
    let mut out = Vec::with_capacity(qs.questions.len());
    for (i, q) in qs.questions.iter().enumerate() {
        let (Some(qid), Some(img)) = (id_text(&q.question_id), id_text(&q.image_id)) else {
            return Err(input(
                &questions,
                format!("question {i}: question_id and image_id must be numbers or strings"),
            ));
        };
        let Some(answer) = answers.get(&qid) else {
            return Err(input(&annotations, format!("no answer for question {qid}")));
        };
        let image = img
            .parse::<u64>()
            .ok()
            .and_then(|n| by_id.get(&n))
            .ok_or_else(|| input(&images, format!("no image with id {img} (question {qid})")))?;
        out.push(SourceExample::with_image(
            qid,
            qa(&q.question, answer.clone()),
            image.clone(),
        ));
    }
    Ok(out)
}

#[derive(Deserialize)]
struct CocoImage {
    id: serde_json::Value,
    file_name: String,
}

#[derive(Deserialize)]
struct CocoCaption {
    #[serde(default)]
    id: Option<serde_json::Value>,
    image_id: serde_json::Value,
    caption: String,
}

#[derive(Deserialize)]
struct CocoCaptions {
    images: Vec<CocoImage>,
    annotations: Vec<CocoCaption>,
}

/// Caption-image pairs as `cm3 ingest` reads a folder: each image with a `.txt` caption beside
/// it (one example per non-empty line), sorted by name.
fn read_caption_files(dir: &Path) -> Result<Vec<SourceExample>> {
    let mut images: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| input(dir, e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        })
        .collect();
    images.sort();
    let mut out = Vec::new();
    for image in images {
        let txt = image.with_extension("txt");
        if !txt.is_file() {
            continue;
        }
        let bytes =
            cm3_core::fsio::read_input(&txt, 1 << 20).map_err(|e| input(&txt, e.to_string()))?;
        let text = String::from_utf8_lossy(&bytes);
        let stem = image
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        for (i, line) in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .enumerate()
        {
            out.push(SourceExample::with_image(
                format!("{stem}#{i}"),
                BTreeMap::from([("caption".to_string(), line.to_string())]),
                image.clone(),
            ));
        }
    }
    Ok(out)
}

/// A COCO-format captions JSON with its images, or else a folder of images with `.txt` captions.
fn read_captions(dir: &Path) -> Result<Vec<SourceExample>> {
    let Some(json) = find_json(dir, "captions.json", "captions")? else {
        let out = read_caption_files(dir)?;
        return if out.is_empty() {
            Err(input(
                dir,
                "neither a COCO-format captions JSON (captions*.json) nor images with .txt captions",
            ))
        } else {
            Ok(out)
        };
    };
    let c: CocoCaptions = read_json(&json)?;
    // Where a file_name is: images/, the folder, or one folder below (train2014/...).
    let mut roots = vec![images_dir(dir), dir.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(dir) {
        let mut subs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        subs.sort();
        roots.extend(subs);
    }
    let mut files = HashMap::new();
    for im in &c.images {
        let Some(id) = id_text(&im.id) else { continue };
        let name = Path::new(&im.file_name);
        if name.is_absolute() || name.components().any(|c| c.as_os_str() == "..") {
            return Err(input(
                &json,
                format!("image {id}: file_name {:?} leaves the folder", im.file_name),
            ));
        }
        if let Some(path) = roots.iter().map(|r| r.join(name)).find(|p| p.is_file()) {
            files.insert(id, path);
        }
    }
    let mut out = Vec::with_capacity(c.annotations.len());
    for (i, a) in c.annotations.iter().enumerate() {
        let img = id_text(&a.image_id).unwrap_or_default();
        let image = files.get(&img).ok_or_else(|| {
            input(
                dir,
                format!("caption {i}: no image file for image id {img} in {json:?}'s images"),
            )
        })?;
        out.push(SourceExample::with_image(
            a.id.as_ref()
                .and_then(id_text)
                .unwrap_or_else(|| i.to_string()),
            BTreeMap::from([("caption".to_string(), a.caption.trim().to_string())]),
            image.clone(),
        ));
    }
    Ok(out)
}

/// A path from a source file: relative to its folder, never leaving it.
fn inside(dir: &Path, file: &Path, rel: &str, what: &str) -> Result<PathBuf> {
    let p = Path::new(rel);
    if rel.is_empty() || p.is_absolute() || p.components().any(|c| c.as_os_str() == "..") {
        return Err(input(
            file,
            format!("{what} {rel:?} must be a path inside the folder"),
        ));
    }
    let full = dir.join(p);
    if !full.is_file() {
        return Err(input(&full, format!("{what}: no such file")));
    }
    Ok(full)
}

/// The one `*.jsonl` table of a folder (`metadata.jsonl` preferred).
fn find_jsonl(dir: &Path) -> Result<Option<PathBuf>> {
    if dir.join("metadata.jsonl").is_file() {
        return Ok(Some(dir.join("metadata.jsonl")));
    }
    let mut found = files_with_ext(dir, "jsonl")?;
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        _ => Err(input(
            dir,
            "several .jsonl tables: keep one, or name it metadata.jsonl",
        )),
    }
}

/// Row `i` of a JSONL table in `dir`: its image (`image` or `file_name`, inside the folder), and
/// a function naming what the row lacks.
fn row_image(
    dir: &Path,
    file: &Path,
    row: &serde_json::Value,
    i: usize,
) -> Result<(PathBuf, impl Fn(&str) -> SftError)> {
    let file_owned = file.to_path_buf();
    let row_err = move |what: &str| input(&file_owned, format!("row {}: no {what}", i + 1));
    let image = inside(
        dir,
        file,
        &first_of(row, &["image", "file_name"]).ok_or_else(|| row_err("image"))?,
        "image",
    )?;
    Ok((image, row_err))
}

/// The first of `keys` present in a JSON row, as text.
fn first_of(row: &serde_json::Value, keys: &[&str]) -> Option<String> {
    keys.iter()
        .find_map(|k| row.get(*k).and_then(|v| v.as_str()).map(str::to_string))
}

/// Rows of a JSONL table, each an object (bounded like the JSON files).
fn jsonl_rows(file: &Path) -> Result<Vec<serde_json::Value>> {
    let meta = std::fs::metadata(file).map_err(|e| input(file, e.to_string()))?;
    if meta.len() > MAX_JSON_BYTES {
        return Err(input(file, "too large"));
    }
    let text = std::fs::read_to_string(file).map_err(|e| input(file, e.to_string()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let v: serde_json::Value =
                serde_json::from_str(l).map_err(|e| input(file, format!("line {}: {e}", i + 1)))?;
            if v.is_object() {
                Ok(v)
            } else {
                Err(input(file, format!("line {}: not an object", i + 1)))
            }
        })
        .collect()
}

/// Column names of editing triplets (InstructPix2Pix's release and the common alternatives),
/// shared by the JSONL, Parquet and WebDataset readers.
pub(crate) const SOURCE_KEYS: &[&str] = &["source_image", "input_image", "original_image"];
pub(crate) const INSTRUCTION_KEYS: &[&str] = &["edit_instruction", "instruction", "edit_prompt"];
pub(crate) const EDITED_KEYS: &[&str] = &["edited_image", "output_image"];

/// InstructPix2Pix triplets from a JSONL table: the source image, the instruction, the edited
/// image (the column names of the InstructPix2Pix release, `input_image`/`edit_prompt`/
/// `edited_image`, or `source_image`/`edit_instruction`), images as paths inside the folder.
fn read_edits(dir: &Path) -> Result<Vec<SourceExample>> {
    if let Some(file) = find_jsonl(dir)? {
        return read_edits_table(&file);
    }
    Err(input(
        dir,
        "no metadata.jsonl, Parquet tables or WebDataset tars of (source image, instruction, \
         edited image)",
    ))
}

/// The files of a folder (not below it) whose extension is `ext`, sorted.
fn files_with_ext(dir: &Path, ext: &str) -> Result<Vec<PathBuf>> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| input(dir, e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == ext))
        .collect();
    found.sort();
    Ok(found)
}

/// [`read_edits`] from its JSONL table.
fn read_edits_table(file: &Path) -> Result<Vec<SourceExample>> {
    let dir = file.parent().unwrap_or(Path::new("."));
    let file = file.to_path_buf();
    let mut out = Vec::new();
    for (i, row) in jsonl_rows(&file)?.iter().enumerate() {
        let get = |keys: &[&str]| {
            first_of(row, keys)
                .ok_or_else(|| input(&file, format!("row {}: none of {keys:?}", i + 1)))
        };
        let source = inside(dir, &file, &get(SOURCE_KEYS)?, "source image")?;
        let edited = inside(dir, &file, &get(EDITED_KEYS)?, "edited image")?;
        let instruction = get(INSTRUCTION_KEYS)?.trim().to_string();
        out.push(SourceExample {
            id: first_of(row, &["id", "key"]).unwrap_or_else(|| i.to_string()),
            fields: BTreeMap::from([("edit_instruction".to_string(), instruction)]),
            images: BTreeMap::from([
                (ImageSlot::Source, ImageSource::File(source)),
                (ImageSlot::Edited, ImageSource::File(edited)),
            ]),
        });
    }
    Ok(out)
}

/// Image-conditioned generation: (feature image, caption, image) rows of a JSONL table. For
/// `edge` without a table (or rows without `feature_image`), the feature is the Canny edges
/// cm3 computes from the image, as ControlNet does; other features need their own models and
/// are given as files.
fn read_control(task: Task, dir: &Path) -> Result<Vec<SourceExample>> {
    let Some(file) = find_jsonl(dir)? else {
        if task == Task::Edge {
            let mut out = read_captions(dir)?;
            for ex in &mut out {
                if let Some(ImageSource::File(p)) = ex.images.get(&ImageSlot::Image).cloned() {
                    ex.images
                        .insert(ImageSlot::Feature, ImageSource::CannyOf(p));
                }
            }
            return Ok(out);
        }
        return Err(input(
            dir,
            format!("no metadata.jsonl of (feature_image, caption, image) rows for {task}"),
        ));
    };
    let mut out = Vec::new();
    for (i, row) in jsonl_rows(&file)?.iter().enumerate() {
        let (image, row_err) = row_image(dir, &file, row, i)?;
        let caption = first_of(row, &["caption", "text"]).ok_or_else(|| row_err("caption"))?;
        let feature = match first_of(row, &["feature_image", "conditioning_image"]) {
            Some(f) => ImageSource::File(inside(dir, &file, &f, "feature image")?),
            None if task == Task::Edge => ImageSource::CannyOf(image.clone()),
            None => return Err(row_err("feature_image")),
        };
        out.push(SourceExample {
            id: first_of(row, &["id", "key"]).unwrap_or_else(|| i.to_string()),
            fields: BTreeMap::from([("caption".to_string(), caption.trim().to_string())]),
            images: BTreeMap::from([
                (ImageSlot::Feature, feature),
                (ImageSlot::Image, ImageSource::File(image)),
            ]),
        });
    }
    Ok(out)
}

#[derive(Deserialize)]
struct CocoInstanceImage {
    id: serde_json::Value,
    file_name: String,
    width: f64,
    height: f64,
}

#[derive(Deserialize)]
struct CocoInstance {
    image_id: serde_json::Value,
    category_id: serde_json::Value,
    bbox: [f64; 4],
    #[serde(default)]
    iscrowd: u8,
}

#[derive(Deserialize)]
struct CocoCategory {
    id: serde_json::Value,
    name: String,
}

#[derive(Deserialize)]
struct CocoInstances {
    images: Vec<CocoInstanceImage>,
    annotations: Vec<CocoInstance>,
    categories: Vec<CocoCategory>,
}

/// Where a box of an `w × h` image lands in the square image `cm3 ingest` makes (shorter side
/// resized to `side`, centre crop), as whole pixels `x0,y0,x1,y1`; None when it is cropped away.
pub fn box_in_square(b: [f64; 4], w: f64, h: f64, side: u32) -> Option<String> {
    if !(w > 0.0 && h > 0.0) {
        return None;
    }
    let s = f64::from(side);
    let scale = s / w.min(h);
    let (ox, oy) = ((w * scale - s) / 2.0, (h * scale - s) / 2.0);
    let clamp = |v: f64| v.clamp(0.0, s);
    let x0 = clamp(b[0] * scale - ox);
    let y0 = clamp(b[1] * scale - oy);
    let x1 = clamp((b[0] + b[2]) * scale - ox);
    let y1 = clamp((b[1] + b[3]) * scale - oy);
    (x1 - x0 >= 1.0 && y1 - y0 >= 1.0).then(|| {
        format!(
            "{},{},{},{}",
            x0.round() as i64,
            y0.round() as i64,
            x1.round() as i64,
            y1.round() as i64
        )
    })
}

/// Spatially grounded generation: COCO instances (`instances*.json`: boxes and category names)
/// with the captions (`captions*.json`) of the same images; one example per image, with its
/// first caption and its boxes (crowd regions left out) in the square image's pixels.
fn read_detection(dir: &Path, side: u32) -> Result<Vec<SourceExample>> {
    let inst_path = find_json(dir, "instances.json", "instances")?
        .ok_or_else(|| input(dir, "no COCO instances JSON (instances*.json)"))?;
    let inst: CocoInstances = read_json(&inst_path)?;
    let captions = read_captions(dir)?;
    let names: HashMap<String, String> = inst
        .categories
        .iter()
        .filter_map(|c| Some((id_text(&c.id)?, c.name.clone())))
        .collect();
    let mut boxes: HashMap<String, Vec<(String, String)>> = HashMap::new();
    let dims: HashMap<String, (f64, f64, String)> = inst
        .images
        .iter()
        .filter_map(|i| Some((id_text(&i.id)?, (i.width, i.height, i.file_name.clone()))))
        .collect();
    for a in inst.annotations.iter().filter(|a| a.iscrowd == 0) {
        let (Some(img), Some(cat)) = (id_text(&a.image_id), id_text(&a.category_id)) else {
            continue;
        };
        let (Some(&(w, h, _)), Some(name)) = (dims.get(&img), names.get(&cat)) else {
            continue;
        };
        if let Some(loc) = box_in_square(a.bbox, w, h, side) {
            boxes.entry(img).or_default().push((name.clone(), loc));
        }
    }
    // The first caption of each image with boxes.
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for ex in captions {
        let Some(ImageSource::File(path)) = ex.images.get(&ImageSlot::Image) else {
            continue;
        };
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let Some((img, _)) = dims
            .iter()
            .find(|(_, d)| Path::new(&d.2).file_name().and_then(|n| n.to_str()) == Some(name))
        else {
            continue;
        };
        let Some(objects) = boxes.get(img) else {
            continue;
        };
        if !seen.insert(img.clone()) {
            continue;
        }
        let mut fields = ex.fields.clone();
        fields.insert("objects".into(), crate::templates::objects_text(objects));
        out.push(SourceExample {
            id: img.clone(),
            fields,
            images: ex.images.clone(),
        });
    }
    Ok(out)
}

/// The examples of `task` from `path`.
/// `side`: the square image side of the pretrained dataset (detection boxes are given in it).
/// Image files of `dir` by file stem and by trailing number (the conventions of Visual Genome,
/// COCO and Open Images file names).
fn images_by_name(dir: &Path) -> Result<(HashMap<String, PathBuf>, HashMap<u64, PathBuf>)> {
    let mut by_stem = HashMap::new();
    let entries = std::fs::read_dir(dir).map_err(|e| input(dir, e.to_string()))?;
    for e in entries {
        let path = e.map_err(|e| input(dir, e.to_string()))?.path();
        let is_image = path
            .extension()
            .and_then(|s| s.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
        if is_image
            && path.is_file()
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
        {
            by_stem.insert(stem.to_string(), path.clone());
        }
    }
    Ok((by_stem, images_by_id(dir)?))
}

/// The image of id `id` (text): by file stem, else by number.
fn image_of(
    id: &str,
    by_stem: &HashMap<String, PathBuf>,
    by_number: &HashMap<u64, PathBuf>,
) -> Option<PathBuf> {
    by_stem
        .get(id)
        .or_else(|| id.parse::<u64>().ok().and_then(|n| by_number.get(&n)))
        .cloned()
}

#[derive(Deserialize)]
struct Paragraph {
    image_id: serde_json::Value,
    paragraph: String,
}

/// Image Paragraph (Krause et al., 2017): `paragraphs_v1.json` (a list of `image_id`,
/// `paragraph`) with the Visual Genome images by id (`2356347.jpg`, in `images/` or the
/// folder). When the release's `train_split.json` (a list of ids) is there, only those images
/// (the others are the evaluation splits).
fn read_paragraphs(dir: &Path) -> Result<Vec<SourceExample>> {
    let json = find_json(dir, "paragraphs_v1.json", "paragraphs")?
        .ok_or_else(|| input(dir, "no paragraphs_v1.json (image_id, paragraph)"))?;
    let rows: Vec<Paragraph> = read_json(&json)?;
    let train: Option<std::collections::HashSet<String>> =
        match find_json(dir, "train_split.json", "train_split")? {
            Some(split) => {
                let ids: Vec<serde_json::Value> = read_json(&split)?;
                Some(ids.iter().filter_map(id_text).collect())
            }
            None => None,
        };
    let images = images_dir(dir);
    let (by_stem, by_number) = images_by_name(&images)?;
    let mut out = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let id = id_text(&r.image_id)
            .ok_or_else(|| input(&json, format!("entry {i}: image_id is not a number")))?;
        if train.as_ref().is_some_and(|t| !t.contains(&id)) {
            continue;
        }
        let paragraph = r.paragraph.split_whitespace().collect::<Vec<_>>().join(" ");
        if paragraph.is_empty() {
            continue;
        }
        let image = image_of(&id, &by_stem, &by_number)
            .ok_or_else(|| input(&images, format!("no image with id {id} (entry {i})")))?;
        out.push(SourceExample::with_image(
            id,
            BTreeMap::from([("caption".to_string(), paragraph)]),
            image,
        ));
    }
    Ok(out)
}

#[derive(Deserialize)]
struct Narrative {
    image_id: serde_json::Value,
    caption: String,
    #[serde(default)]
    annotator_id: Option<serde_json::Value>,
}

/// Largest JSONL line of a Localized Narratives file (a narration with its mouse trace).
const MAX_NARRATIVE_LINE: usize = 16 << 20;

/// Localized Narratives (Pont-Tuset et al., 2020): the release's JSONL files (every `*.jsonl`
/// of the folder; `image_id`, `caption`, the traces ignored), read line by line, with the images
/// by id (COCO and Flickr30k numbers, Open Images hex ids as file stems).
fn read_narratives(dir: &Path) -> Result<Vec<SourceExample>> {
    use std::io::BufRead;
    let files = files_with_ext(dir, "jsonl")?;
    if files.is_empty() {
        return Err(input(dir, "no Localized Narratives .jsonl files"));
    }
    let images = images_dir(dir);
    let (by_stem, by_number) = images_by_name(&images)?;
    let mut out = Vec::new();
    for file in &files {
        let f = std::fs::File::open(file).map_err(|e| input(file, e.to_string()))?;
        let mut reader = std::io::BufReader::new(f);
        let mut line = Vec::new();
        let mut n = 0usize;
        loop {
            line.clear();
            let read = std::io::Read::take(&mut reader, MAX_NARRATIVE_LINE as u64 + 1)
                .read_until(b'\n', &mut line)
                .map_err(|e| input(file, e.to_string()))?;
            if read == 0 {
                break;
            }
            n += 1;
            if line.len() > MAX_NARRATIVE_LINE {
                return Err(input(
                    file,
                    format!("line {n}: over {MAX_NARRATIVE_LINE} bytes"),
                ));
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let r: Narrative =
                serde_json::from_slice(&line).map_err(|e| input(file, format!("line {n}: {e}")))?;
            let id = id_text(&r.image_id)
                .ok_or_else(|| input(file, format!("line {n}: image_id is not an id")))?;
            let caption = r.caption.split_whitespace().collect::<Vec<_>>().join(" ");
            if caption.is_empty() {
                continue;
            }
            let image = image_of(&id, &by_stem, &by_number).ok_or_else(|| {
                input(
                    &images,
                    format!("no image with id {id} ({file:?} line {n})"),
                )
            })?;
            let annotator = r
                .annotator_id
                .as_ref()
                .and_then(id_text)
                .unwrap_or_default();
            out.push(SourceExample::with_image(
                format!("{id}/{annotator}/{n}"),
                BTreeMap::from([("caption".to_string(), caption)]),
                image,
            ));
        }
    }
    Ok(out)
}

#[derive(Deserialize)]
struct ScienceProblem {
    question: String,
    choices: Vec<String>,
    answer: usize,
    #[serde(default)]
    hint: String,
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    solution: String,
    #[serde(default)]
    split: Option<String>,
}

/// ScienceQA (Lu et al., 2022): `problems.json` (id → question, choices, answer index, hint,
/// image, solution, split) with each problem's image at `images/<split>/<id>/<image>` or
/// `<split>/<id>/<image>`. Only problems with an image (Table 5's template ends in one) and, when
/// splits are given, of the `train` split (the others are evaluation data). Written as the
/// ScienceQA release prompts it: the hint is the context (`N/A` when empty), the options
/// `(A) first (B) second ...`, the explanation its `solution`, the answer `(B) second`.
fn read_scienceqa(dir: &Path) -> Result<Vec<SourceExample>> {
    let json = find_json(dir, "problems.json", "problems")?
        .ok_or_else(|| input(dir, "no problems.json (ScienceQA)"))?;
    let problems: BTreeMap<String, ScienceProblem> = read_json(&json)?;
    let letter = |i: usize| char::from(b'A' + (i % 26) as u8);
    let mut out = Vec::new();
    for (id, p) in &problems {
        let Some(name) = p.image.as_deref().filter(|n| !n.is_empty()) else {
            continue;
        };
        if p.split.as_deref().is_some_and(|s| s != "train") {
            continue;
        }
        let plain = |s: &str| Path::new(s).components().count() == 1 && !s.contains("..");
        if !plain(id) || !plain(name) {
            return Err(input(
                &json,
                format!("problem {id}: image {name:?} is not a plain name"),
            ));
        }
        let split = p.split.as_deref().unwrap_or("train");
        let image = [dir.join("images").join(split), dir.join(split)]
            .iter()
            .map(|d| d.join(id).join(name))
            .find(|p| p.is_file())
            .ok_or_else(|| input(dir, format!("problem {id}: no images/{split}/{id}/{name}")))?;
        let answer = p.choices.get(p.answer).ok_or_else(|| {
            input(
                &json,
                format!(
                    "problem {id}: answer {} is not one of its choices",
                    p.answer
                ),
            )
        })?;
        let choices_text = p
            .choices
            .iter()
            .enumerate()
            .map(|(i, c)| format!("({}) {}", letter(i), c.trim()))
            .collect::<Vec<_>>()
            .join(" ");
        let context = if p.hint.trim().is_empty() {
            "N/A"
        } else {
            p.hint.trim()
        };
        out.push(SourceExample::with_image(
            id.clone(),
            BTreeMap::from([
                ("question".to_string(), p.question.trim().to_string()),
                ("context".to_string(), context.to_string()),
                ("choices_text".to_string(), choices_text),
                ("explanation".to_string(), p.solution.trim().to_string()),
                (
                    "answer".to_string(),
                    format!("({}) {}", letter(p.answer), answer.trim()),
                ),
            ]),
            image,
        ));
    }
    Ok(out)
}

/// OCR ("how to write", Table 5's `draw "{ocr_content}"`): a `metadata.jsonl` of (`image` or
/// `file_name`, `ocr_content` or `text`) rows, or images with a `.txt` beside them holding the
/// text each shows.
fn read_ocr(dir: &Path) -> Result<Vec<SourceExample>> {
    let Some(file) = find_jsonl(dir)? else {
        let mut out = read_caption_files(dir)?;
        for ex in &mut out {
            if let Some(text) = ex.fields.remove("caption") {
                ex.fields.insert("ocr_content".to_string(), text);
            }
        }
        return Ok(out);
    };
    let mut out = Vec::new();
    for (i, row) in jsonl_rows(&file)?.iter().enumerate() {
        let (image, row_err) = row_image(dir, &file, row, i)?;
        let text = first_of(row, &["ocr_content", "text", "ocr"]).ok_or_else(|| row_err("text"))?;
        out.push(SourceExample::with_image(
            first_of(row, &["id", "key"]).unwrap_or_else(|| i.to_string()),
            BTreeMap::from([("ocr_content".to_string(), text.trim().to_string())]),
            image,
        ));
    }
    Ok(out)
}

/// Images stored inside tables and tars are extracted with `ex`.
pub fn read_task(
    task: Task,
    path: &Path,
    side: u32,
    ex: &mut crate::embedded::Extractor,
) -> Result<Vec<SourceExample>> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let tars = path.is_dir() && !crate::embedded::tars_of(path)?.is_empty();
    let from_file = matches!(task, Task::Coco | Task::Flickr30k | Task::InstructPix2Pix);
    let readable = path.is_dir() || (from_file && path.is_file());
    if !readable {
        return Err(input(
            path,
            format!(
                "the {task} source must be a folder{}",
                if from_file {
                    " or a table/tar file"
                } else {
                    ""
                }
            ),
        ));
    }
    let out = match task {
        Task::Vqa2 | Task::Okvqa | Task::VizWiz => read_vqa(path)?,
        Task::Coco | Task::Flickr30k if path.is_dir() && !tars => read_captions(path)?,
        Task::Coco | Task::Flickr30k => crate::embedded::read_ingest_captions(path, ex)?,
        Task::InstructPix2Pix if ext == "parquet" => crate::embedded::read_parquet_edits(path, ex)?,
        Task::InstructPix2Pix if ext == "tar" || tars => crate::embedded::read_tar_edits(path, ex)?,
        Task::InstructPix2Pix if ext == "jsonl" => read_edits_table(path)?,
        Task::InstructPix2Pix if path.is_dir() && find_jsonl(path)?.is_none() => {
            let mut out = Vec::new();
            for table in files_with_ext(path, "parquet")? {
                out.extend(crate::embedded::read_parquet_edits(&table, ex)?);
            }
            if out.is_empty() {
                read_edits(path)?
            } else {
                out
            }
        }
        Task::InstructPix2Pix => read_edits(path)?,
        Task::Edge
        | Task::Seg
        | Task::Hed
        | Task::Pose
        | Task::Depth
        | Task::Norm
        | Task::Scribble => read_control(task, path)?,
        Task::Detection => read_detection(path, side)?,
        Task::ImageParagraph => read_paragraphs(path)?,
        Task::LocalizedNarratives => read_narratives(path)?,
        Task::ScienceQa => read_scienceqa(path)?,
        Task::Ocr => read_ocr(path)?,
    };
    if out.is_empty() {
        return Err(input(path, format!("no {task} examples")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// These sources store no images inside files: nothing is extracted.
    fn no_extraction() -> crate::embedded::Extractor {
        crate::embedded::Extractor::new(PathBuf::from("/nonexistent/cm3-sft-scratch"))
    }

    fn answers(v: &[&str]) -> Vec<Answer> {
        v.iter()
            .map(|a| Answer {
                answer: (*a).to_string(),
            })
            .collect()
    }

    #[test]
    fn boxes_follow_the_resize_and_centre_crop() {
        // 640 × 480 → shorter side 256: scale 0.5333, 341.3 wide, 42.7 cropped each side.
        assert_eq!(
            box_in_square([100.0, 50.0, 200.0, 100.0], 640.0, 480.0, 256).as_deref(),
            Some("11,27,117,80")
        );
        // Entirely in the cropped-away left margin.
        assert_eq!(
            box_in_square([0.0, 0.0, 60.0, 100.0], 640.0, 480.0, 256),
            None
        );
        assert_eq!(box_in_square([0.0, 0.0, 1.0, 1.0], 0.0, 480.0, 256), None);
    }

    #[test]
    fn a_folder_of_images_and_captions_is_a_captioning_source() {
        let dir = tempfile::tempdir().expect("tmp");
        let d = dir.path();
        std::fs::write(d.join("a.jpg"), b"x").expect("img");
        std::fs::write(d.join("a.txt"), "a cat\n\na dog\n").expect("txt");
        std::fs::write(d.join("b.png"), b"x").expect("img");
        let ex = read_task(Task::Coco, d, 256, &mut no_extraction()).expect("read");
        assert_eq!(ex.len(), 2, "two captions of a.jpg; b.png has none");
        assert_eq!(ex[1].fields["caption"], "a dog");
        assert_eq!(ex[1].id, "a#1");
        let empty = tempfile::tempdir().expect("tmp");
        let err = read_task(Task::Coco, empty.path(), 256, &mut no_extraction())
            .expect_err("nothing")
            .to_string();
        assert!(err.contains("neither"), "{err}");
    }

    #[test]
    fn the_most_frequent_answer_ties_to_the_first() {
        assert_eq!(
            most_frequent(&answers(&["red", "blue", "blue", "red", "green"])),
            Some("red".into())
        );
        assert_eq!(most_frequent(&answers(&["a", "b", "b"])), Some("b".into()));
        assert_eq!(most_frequent(&answers(&["", " "])), None);
    }

    #[test]
    fn vqa_folders_are_read_with_images_by_id() {
        let dir = tempfile::tempdir().expect("tmp");
        let d = dir.path();
        std::fs::create_dir(d.join("images")).expect("images");
        std::fs::write(d.join("images/COCO_train2014_000000000042.jpg"), b"x").expect("img");
        std::fs::write(
            d.join("questions.json"),
            r#"{"questions": [{"question_id": 7, "image_id": 42, "question": " What colour? "}]}"#,
        )
        .expect("q");
        std::fs::write(
            d.join("annotations.json"),
            r#"{"annotations": [{"question_id": 7, "image_id": 42,
                "answers": [{"answer": "blue"}, {"answer": "red"}, {"answer": "red"}]}]}"#,
        )
        .expect("a");
        let ex = read_task(Task::Vqa2, d, 256, &mut no_extraction()).expect("read");
        assert_eq!(ex.len(), 1);
        assert_eq!(ex[0].fields["question"], "What colour?");
        assert_eq!(ex[0].fields["answer"], "red");
        assert!(
            ex[0]
                .main_image()
                .is_some_and(|i| i.path().ends_with("COCO_train2014_000000000042.jpg"))
        );
        // A question whose image is missing is named.
        std::fs::remove_file(d.join("images/COCO_train2014_000000000042.jpg")).expect("rm");
        let err = read_task(Task::Vqa2, d, 256, &mut no_extraction())
            .expect_err("no image")
            .to_string();
        assert!(err.contains("no image with id 42"), "{err}");
        let err = read_task(Task::ScienceQa, d, 256, &mut no_extraction())
            .expect_err("no problems")
            .to_string();
        assert!(err.contains("problems.json"), "{err}");
    }

    fn png(path: &Path) {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
        image::RgbImage::new(4, 4).save(path).expect("png");
    }

    #[test]
    fn image_paragraphs_keep_the_train_split() {
        let dir = tempfile::tempdir().expect("tmp");
        let d = dir.path();
        png(&d.join("images/11.jpg"));
        png(&d.join("images/12.jpg"));
        std::fs::write(
            d.join("paragraphs_v1.json"),
            r#"[{"image_id": 11, "paragraph": "A cat sits.\n  It is  grey.", "url": "x"},
                {"image_id": 12, "paragraph": "A dog.", "url": "y"},
                {"image_id": 13, "paragraph": "Not in train.", "url": "z"}]"#,
        )
        .expect("json");
        std::fs::write(d.join("train_split.json"), "[11, 12]").expect("split");
        let ex = read_task(Task::ImageParagraph, d, 256, &mut no_extraction()).expect("read");
        assert_eq!(ex.len(), 2);
        assert_eq!(ex[0].fields["caption"], "A cat sits. It is grey.");
        assert_eq!(
            ex[1].main_image(),
            Some(&ImageSource::File(d.join("images/12.jpg")))
        );
        // Without the split file, every paragraph: image 13 is then missing, by name.
        std::fs::remove_file(d.join("train_split.json")).expect("rm");
        let err = read_task(Task::ImageParagraph, d, 256, &mut no_extraction())
            .expect_err("missing image")
            .to_string();
        assert!(err.contains("no image with id 13"), "{err}");
    }

    #[test]
    fn localized_narratives_by_number_and_by_stem() {
        let dir = tempfile::tempdir().expect("tmp");
        let d = dir.path();
        png(&d.join("images/000000000042.jpg"));
        png(&d.join("images/0000b86e2fd18333.jpg"));
        std::fs::write(
            d.join("coco_train_localized_narratives.jsonl"),
            "{\"dataset_id\": \"mscoco_train2017\", \"image_id\": \"42\", \"annotator_id\": 7, \"caption\": \"In this image  we can see a cow.\", \"traces\": [[{\"x\": 0.1, \"y\": 0.2, \"t\": 0.3}]]}\n\n",
        )
        .expect("jsonl");
        std::fs::write(
            d.join("open_images_train_v6_localized_narratives.jsonl"),
            "{\"image_id\": \"0000b86e2fd18333\", \"caption\": \"A road.\"}\n",
        )
        .expect("jsonl");
        let ex = read_task(Task::LocalizedNarratives, d, 256, &mut no_extraction()).expect("read");
        assert_eq!(ex.len(), 2);
        assert_eq!(ex[0].fields["caption"], "In this image we can see a cow.");
        assert_eq!(ex[0].id, "42/7/1");
        assert_eq!(
            ex[1].main_image(),
            Some(&ImageSource::File(d.join("images/0000b86e2fd18333.jpg")))
        );
    }

    #[test]
    fn scienceqa_problems_with_images_of_the_train_split() {
        let dir = tempfile::tempdir().expect("tmp");
        let d = dir.path();
        png(&d.join("images/train/5/image.png"));
        png(&d.join("images/test/6/image.png"));
        std::fs::write(
            d.join("problems.json"),
            r#"{"5": {"question": "Which is a mammal?", "choices": ["frog", "whale"], "answer": 1,
                      "hint": "", "image": "image.png", "solution": "Whales feed milk.", "split": "train"},
                "6": {"question": "q", "choices": ["a", "b"], "answer": 0, "hint": "h",
                      "image": "image.png", "solution": "s", "split": "test"},
                "7": {"question": "no image", "choices": ["a"], "answer": 0, "image": null,
                      "split": "train"}}"#,
        )
        .expect("json");
        let ex = read_task(Task::ScienceQa, d, 256, &mut no_extraction()).expect("read");
        assert_eq!(ex.len(), 1, "only problem 5: 6 is test, 7 has no image");
        let f = &ex[0].fields;
        assert_eq!(f["choices_text"], "(A) frog (B) whale");
        assert_eq!(f["answer"], "(B) whale");
        assert_eq!(f["context"], "N/A");
        assert_eq!(f["explanation"], "Whales feed milk.");
        let r = crate::templates::render(Task::ScienceQa, 0, &example_of(&ex[0])).expect("render");
        let text = format!("{:?}", r.segments);
        assert!(text.contains("So the answer is (B) whale."), "{text}");
    }

    fn example_of(src: &SourceExample) -> crate::templates::Example {
        let mut ex = crate::templates::Example::new();
        for slot in src.images.keys() {
            ex = ex.image(*slot);
        }
        for (k, v) in &src.fields {
            ex = ex.field(k.clone(), v.clone());
        }
        ex
    }

    #[test]
    fn ocr_from_a_table_or_text_files() {
        let dir = tempfile::tempdir().expect("tmp");
        let d = dir.path();
        png(&d.join("sign.png"));
        std::fs::write(d.join("sign.txt"), "OPEN 24 HOURS\n").expect("txt");
        let ex = read_task(Task::Ocr, d, 256, &mut no_extraction()).expect("read");
        assert_eq!(ex[0].fields["ocr_content"], "OPEN 24 HOURS");
        std::fs::write(
            d.join("metadata.jsonl"),
            "{\"image\": \"sign.png\", \"ocr_content\": \"SALE\"}\n",
        )
        .expect("jsonl");
        let ex = read_task(Task::Ocr, d, 256, &mut no_extraction()).expect("read");
        assert_eq!(ex[0].fields["ocr_content"], "SALE");
        let r = crate::templates::render(Task::Ocr, 0, &example_of(&ex[0])).expect("render");
        assert!(
            format!("{:?}", r.segments).contains("draw \\\"SALE\\\""),
            "{:?}",
            r.segments
        );
    }
}
