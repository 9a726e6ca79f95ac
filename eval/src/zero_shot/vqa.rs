//! Zero-shot VQA in Table 5's prompt form: the document `Question: {question} Answer: {answer}.
//! <break> image` with the answer as the CM3 span to infill (`<eos> Question: q Answer: <mask:0>.
//! <break> image <infill> <mask:0>`), greedy, then the official VQA accuracy.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::leakage::LeakageReport;
use super::{
    Progress, id_text, image_tokenizer, images_in, one_sample, open_run, pin_settings, read_json,
    write_json,
};
use crate::error::{EvalError, Result};

/// Table 5's first VQA template, with `<mask>` where the answer goes.
pub const TEMPLATE: &str = "Question: {question} Answer: <mask>.";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VqaConfig {
    /// At most this many questions (in question-id order); 0: all.
    pub count: usize,
    /// Longest answer generated, in text tokens.
    pub max_tokens: usize,
}

impl Default for VqaConfig {
    fn default() -> Self {
        Self {
            count: 0,
            max_tokens: 8,
        }
    }
}

#[derive(Debug, Clone)]
pub struct VqaOptions {
    pub run: PathBuf,
    /// VQA v2 questions JSON (`{"questions": [{"question_id", "image_id", "question"}]}`).
    pub questions: PathBuf,
    /// VQA v2 annotations JSON (the ten answers of each question).
    pub annotations: PathBuf,
    /// The images, named with their COCO id (`COCO_val2014_000000391895.jpg` or similar).
    pub images: PathBuf,
    pub out: PathBuf,
    pub config: VqaConfig,
    pub allow_overlap: bool,
}

#[derive(Debug, Deserialize)]
struct Question {
    question_id: serde_json::Value,
    image_id: serde_json::Value,
    question: String,
}

#[derive(Debug, Deserialize)]
struct Questions {
    questions: Vec<Question>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VqaRecord {
    pub question_id: String,
    pub answer: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct VqaReport {
    pub questions: usize,
    pub answered_now: usize,
    pub metrics: serde_json::Value,
    #[serde(skip)]
    pub table: String,
    pub leakage: LeakageReport,
    pub predictions: PathBuf,
}

/// (question id, image id, question), in question-id order.
fn read_questions(path: &Path) -> Result<Vec<(String, String, String)>> {
    let q: Questions = read_json(path)?;
    let mut out = Vec::with_capacity(q.questions.len());
    for (i, q) in q.questions.into_iter().enumerate() {
        let (Some(qid), Some(img)) = (id_text(&q.question_id), id_text(&q.image_id)) else {
            return Err(EvalError::input(
                path.display().to_string(),
                format!("question {i}: question_id and image_id must be numbers or strings"),
            ));
        };
        out.push((qid, img, q.question));
    }
    out.sort_by_key(|(qid, _, _)| (qid.parse::<u64>().unwrap_or(u64::MAX), qid.clone()));
    Ok(out)
}

pub fn run(o: &VqaOptions) -> Result<VqaReport> {
    let c = &o.config;
    if c.max_tokens == 0 || c.max_tokens > 256 {
        return Err(EvalError::input(
            "vqa settings",
            "max_tokens must be in 1..=256",
        ));
    }
    let mut questions = read_questions(&o.questions)?;
    if c.count > 0 {
        questions.truncate(c.count);
    }
    let files: BTreeMap<String, PathBuf> = images_in(&o.images)?.into_iter().collect();
    let mut needed = Vec::new();
    for (qid, img, _) in &questions {
        let file = files.get(img).ok_or_else(|| {
            EvalError::input(
                o.images.display().to_string(),
                format!("no image with id {img} (question {qid})"),
            )
        })?;
        needed.push((img.clone(), file.clone()));
    }
    needed.sort();
    needed.dedup();
    let (g, leakage) = open_run(&o.run, &needed, o.allow_overlap)?;
    let tok = image_tokenizer(&g, &o.run)?;
    pin_settings(
        &o.out,
        &json!({
            "protocol": "vqa", "run": o.run, "checkpoint": g.checkpoint,
            "questions": o.questions, "annotations": o.annotations, "config": c,
        }),
    )?;
    let progress = Progress::new(o.out.join("answers.jsonl"));
    let mut done: Vec<VqaRecord> = progress.load()?;
    let finished: BTreeSet<String> = done.iter().map(|r| r.question_id.clone()).collect();
    let greedy = one_sample(0.0, 0);
    let mut answered_now = 0;
    let mut last_image: Option<(String, Vec<u8>)> = None;
    for (qid, img, question) in &questions {
        if finished.contains(qid) {
            continue;
        }
        let rgb = match &last_image {
            Some((id, rgb)) if id == img => rgb.clone(),
            _ => {
                let file = &files[img];
                let rgb = cm3_tokenize::image::load_image(file, tok.resolution())?;
                last_image = Some((img.clone(), rgb.clone()));
                rgb
            }
        };
        // The question may not hold the user's span marker: it would be a second `<mask>`.
        let question = question.replace(cm3_core::vocab::MASK, " ");
        let text = TEMPLATE.replace("{question}", question.trim());
        let answer = g
            .infill_text(&text, Some(&rgb), c.max_tokens, &greedy)?
            .into_iter()
            .next()
            .unwrap_or_default();
        let record = VqaRecord {
            question_id: qid.clone(),
            answer,
        };
        progress.append(&json!(record))?;
        done.push(record);
        answered_now += 1;
    }
    let predictions = o.out.join("predictions.json");
    let results: Vec<serde_json::Value> = done
        .iter()
        .map(|r| json!({ "question_id": super::i2t::id_value(&r.question_id), "answer": r.answer }))
        .collect();
    write_json(&predictions, &json!(results))?;
    // Scored on the questions answered (all of them, unless `count` chose fewer): vqaEval
    // itself requires the results and the annotations to cover the same questions.
    let mut annotations = crate::vqa::read_annotations(&o.annotations)?;
    let answered: BTreeSet<String> = done.iter().map(|r| r.question_id.clone()).collect();
    annotations
        .annotations
        .retain(|a| answered.contains(&a.question_id.to_string()));
    let scores = crate::vqa::evaluate(&annotations, &crate::vqa::read_results(&predictions)?)?;
    let metrics = scores.to_json();
    write_json(
        &o.out.join("report.json"),
        &json!({
            "protocol": "vqa",
            "metrics": metrics,
            "questions": done.len(),
            "template": TEMPLATE,
            "run": o.run,
            "checkpoint": g.checkpoint,
            "config": c,
            "leakage": leakage,
            "predictions": "predictions.json",
            "tool_version": env!("CARGO_PKG_VERSION"),
        }),
    )?;
    Ok(VqaReport {
        questions: done.len(),
        answered_now,
        metrics,
        table: scores.table(),
        leakage,
        predictions,
    })
}
