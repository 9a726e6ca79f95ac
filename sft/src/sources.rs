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
//! The image tasks (editing, X-to-image, detection, OCR) and the other text tasks need their own
//! readers and are refused with the task named.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Result, SftError};
use crate::templates::Task;

/// Largest JSON file read (VQA v2's train annotations are about 0.35 GB).
pub const MAX_JSON_BYTES: u64 = 4 << 30;

/// One example of a task's source: the template's fields and the example's image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceExample {
    /// The source's own id (question id, annotation id), for the record.
    pub id: String,
    pub fields: BTreeMap<String, String>,
    pub image: PathBuf,
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
        let (Some(stem), Some(ext)) = (
            path.file_stem().and_then(|s| s.to_str()),
            path.extension().and_then(|s| s.to_str()),
        ) else {
            continue;
        };
        if !IMAGE_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()) || !path.is_file() {
            continue;
        }
        let digits: String = stem
            .chars()
            .rev()
            .take_while(char::is_ascii_digit)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let Ok(id) = digits.parse::<u64>() else {
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

/// A JSON id (number or string) as text.
fn id_text(v: &serde_json::Value) -> Option<String> {
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
            out.push(SourceExample {
                id: i.to_string(),
                fields: qa(&e.question, answer),
                image,
            });
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
        out.push(SourceExample {
            id: qid,
            fields: qa(&q.question, answer.clone()),
            image: image.clone(),
        });
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

fn read_captions(dir: &Path) -> Result<Vec<SourceExample>> {
    let json = find_json(dir, "captions.json", "captions")?
        .ok_or_else(|| input(dir, "no COCO-format captions JSON (captions*.json)"))?;
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
        out.push(SourceExample {
            id: a
                .id
                .as_ref()
                .and_then(id_text)
                .unwrap_or_else(|| i.to_string()),
            fields: BTreeMap::from([("caption".to_string(), a.caption.trim().to_string())]),
            image: image.clone(),
        });
    }
    Ok(out)
}

/// The examples of `task` from `path`.
pub fn read_task(task: Task, path: &Path) -> Result<Vec<SourceExample>> {
    if !path.is_dir() {
        return Err(input(path, format!("the {task} source must be a folder")));
    }
    let out = match task {
        Task::Vqa2 | Task::Okvqa | Task::VizWiz => read_vqa(path)?,
        Task::Coco | Task::Flickr30k => read_captions(path)?,
        other => {
            return Err(SftError::Unsupported {
                task: other,
                reason: "cm3 sft build reads captioning (coco, flickr30k) and VQA (vqa2, okvqa, \
                         vizwiz) sources so far"
                    .into(),
            });
        }
    };
    if out.is_empty() {
        return Err(input(path, format!("no {task} examples")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers(v: &[&str]) -> Vec<Answer> {
        v.iter()
            .map(|a| Answer {
                answer: (*a).to_string(),
            })
            .collect()
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
        let ex = read_task(Task::Vqa2, d).expect("read");
        assert_eq!(ex.len(), 1);
        assert_eq!(ex[0].fields["question"], "What colour?");
        assert_eq!(ex[0].fields["answer"], "red");
        assert!(ex[0].image.ends_with("COCO_train2014_000000000042.jpg"));
        // A question whose image is missing is named.
        std::fs::remove_file(d.join("images/COCO_train2014_000000000042.jpg")).expect("rm");
        let err = read_task(Task::Vqa2, d).expect_err("no image").to_string();
        assert!(err.contains("no image with id 42"), "{err}");
        let err = read_task(Task::Edge, d)
            .expect_err("unsupported")
            .to_string();
        assert!(err.contains("edge"), "{err}");
    }
}
