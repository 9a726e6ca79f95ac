//! VQA accuracy as the official evaluation computes it: GT-Vision-Lab/VQA
//! `PythonEvaluationTools/vqaEvaluation/vqaEval.py` at commit a013f00 (BSD-2-Clause, Copyright (c)
//! 2014 Aishwarya Agrawal), re-implemented and checked against its output on 400 questions
//! (`tests/fixtures/vqa_accuracy_oracle`).
//!
//! Per question, with the human answers `a_1..a_n` (10 in VQA) and the prediction `p`:
//!
//! 1. every answer and the prediction get `\n` and `\t` turned into spaces and are stripped;
//! 2. **only if the human answers are not all identical** (vqaEval's `len(set(gtAnswers)) > 1`)
//!    are answers and prediction normalised ([`normalize_answer`]: punctuation, periods, lower case,
//!    number words to digits, articles dropped, contractions restored). When all humans agree,
//!    "Yes" does not match "yes": that is the official behaviour and kept;
//! 3. accuracy = mean over `i` of `min(1, #{j != i : a_j = p} / 3)`, i.e. the mean over the `n`
//!    leave-one-out subsets of `min(1, matches / 3)`.
//!
//! The overall, per-question-type and per-answer-type accuracies are `100 * mean`, rounded to 2
//! decimals with Python's `round` (vqaEval's `n=2`), summed in annotation order as vqaEval does.
//!
//! Where the inputs go beyond what vqaEval assumes:
//! - **number of answers**: vqaEval's loop works for any count and so does this one (the same
//!   leave-one-out mean over `n` answers); with fewer than 4 answers the maximum is below 100
//!   (`(n-1)/3`), with 1 answer it is 0. A question without answers is refused (vqaEval divides by
//!   zero). A count other than 10 is logged as a warning;
//! - **answer ids**: vqaEval leaves out each answer *dict* by equality, so two identical answer
//!   records (same text and `answer_id`) would both be left out. VQA's ids are 1..10; repeated
//!   `answer_id`s within a question are refused rather than reproduced;
//! - **results**: vqaEval asserts that the set of answered question ids equals the annotated set;
//!   an unknown question, a missing answer and (which vqaEval silently resolves to the last one) a
//!   question answered twice are errors here. Questions annotated twice are refused too.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::LazyLock;

use regex::Regex;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::error::{EvalError, Result};

/// Largest JSON file read (VQA v2's largest annotation file is ~330 MB).
pub const MAX_JSON_BYTES: u64 = 2 << 30;
/// vqaEval's `n`: decimals of the reported accuracies.
pub const PRECISION: usize = 2;
/// `periodStrip.sub("", text, re.UNICODE)` passes `re.UNICODE` (32) as `count`.
const PERIOD_COUNT: usize = 32;

const PUNCT: [char; 21] = [
    ';', '/', '[', ']', '"', '{', '}', '(', ')', '=', '+', '\\', '_', '-', '>', '<', '@', '`', ',',
    '?', '!',
];
const ARTICLES: [&str; 3] = ["a", "an", "the"];
#[rustfmt::skip]
const NUMBER_WORDS: [(&str, &str); 12] = [
    ("none", "0"), ("zero", "0"), ("one", "1"), ("two", "2"), ("three", "3"), ("four", "4"),
    ("five", "5"), ("six", "6"), ("seven", "7"), ("eight", "8"), ("nine", "9"), ("ten", "10"),
];
/// vqaEval's `contractions`, verbatim (its capitalised keys never match: words are lower-cased
/// first; "somebody'd" -> "somebodyd" is its own typo, kept).
#[rustfmt::skip]
const CONTRACTIONS: &[(&str, &str)] = &[
    ("aint", "ain't"), ("arent", "aren't"), ("cant", "can't"), ("couldve", "could've"),
    ("couldnt", "couldn't"), ("couldn'tve", "couldn't've"), ("couldnt've", "couldn't've"),
    ("didnt", "didn't"), ("doesnt", "doesn't"), ("dont", "don't"), ("hadnt", "hadn't"),
    ("hadnt've", "hadn't've"), ("hadn'tve", "hadn't've"), ("hasnt", "hasn't"),
    ("havent", "haven't"), ("hed", "he'd"), ("hed've", "he'd've"), ("he'dve", "he'd've"),
    ("hes", "he's"), ("howd", "how'd"), ("howll", "how'll"), ("hows", "how's"),
    ("Id've", "I'd've"), ("I'dve", "I'd've"), ("Im", "I'm"), ("Ive", "I've"), ("isnt", "isn't"),
    ("itd", "it'd"), ("itd've", "it'd've"), ("it'dve", "it'd've"), ("itll", "it'll"),
    ("let's", "let's"), ("maam", "ma'am"), ("mightnt", "mightn't"), ("mightnt've", "mightn't've"),
    ("mightn'tve", "mightn't've"), ("mightve", "might've"), ("mustnt", "mustn't"),
    ("mustve", "must've"), ("neednt", "needn't"), ("notve", "not've"), ("oclock", "o'clock"),
    ("oughtnt", "oughtn't"), ("ow's'at", "'ow's'at"), ("'ows'at", "'ow's'at"),
    ("'ow'sat", "'ow's'at"), ("shant", "shan't"), ("shed've", "she'd've"),
    ("she'dve", "she'd've"), ("she's", "she's"), ("shouldve", "should've"),
    ("shouldnt", "shouldn't"), ("shouldnt've", "shouldn't've"), ("shouldn'tve", "shouldn't've"),
    ("somebody'd", "somebodyd"), ("somebodyd've", "somebody'd've"),
    ("somebody'dve", "somebody'd've"), ("somebodyll", "somebody'll"), ("somebodys", "somebody's"),
    ("someoned", "someone'd"), ("someoned've", "someone'd've"), ("someone'dve", "someone'd've"),
    ("someonell", "someone'll"), ("someones", "someone's"), ("somethingd", "something'd"),
    ("somethingd've", "something'd've"), ("something'dve", "something'd've"),
    ("somethingll", "something'll"), ("thats", "that's"), ("thered", "there'd"),
    ("thered've", "there'd've"), ("there'dve", "there'd've"), ("therere", "there're"),
    ("theres", "there's"), ("theyd", "they'd"), ("theyd've", "they'd've"),
    ("they'dve", "they'd've"), ("theyll", "they'll"), ("theyre", "they're"),
    ("theyve", "they've"), ("twas", "'twas"), ("wasnt", "wasn't"), ("wed've", "we'd've"),
    ("we'dve", "we'd've"), ("weve", "we've"), ("werent", "weren't"), ("whatll", "what'll"),
    ("whatre", "what're"), ("whats", "what's"), ("whatve", "what've"), ("whens", "when's"),
    ("whered", "where'd"), ("wheres", "where's"), ("whereve", "where've"), ("whod", "who'd"),
    ("whod've", "who'd've"), ("who'dve", "who'd've"), ("wholl", "who'll"), ("whos", "who's"),
    ("whove", "who've"), ("whyll", "why'll"), ("whyre", "why're"), ("whys", "why's"),
    ("wont", "won't"), ("wouldve", "would've"), ("wouldnt", "wouldn't"),
    ("wouldnt've", "wouldn't've"), ("wouldn'tve", "wouldn't've"), ("yall", "y'all"),
    ("yall'll", "y'all'll"), ("y'allll", "y'all'll"), ("yall'd've", "y'all'd've"),
    ("y'alld've", "y'all'd've"), ("y'all'dve", "y'all'd've"), ("youd", "you'd"),
    ("youd've", "you'd've"), ("you'dve", "you'd've"), ("youll", "you'll"), ("youre", "you're"),
    ("youve", "you've"),
];

static CONTRACTION_MAP: LazyLock<HashMap<&'static str, &'static str>> =
    LazyLock::new(|| CONTRACTIONS.iter().copied().collect());
/// `commaStrip`: a comma between two digits (Python's `\d` and regex's `\d` are both Unicode Nd).
static COMMA_STRIP: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\d,\d").expect("a valid constant regex"));
static DIGIT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\d$").expect("a valid constant regex"));

/// One human answer of a VQA v2 annotation (`answer_confidence` is read past: with distinct ids it
/// plays no part).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Answer {
    pub answer: String,
    pub answer_id: u64,
}

/// One annotated question of a VQA v2 annotations file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Annotation {
    pub question_id: u64,
    #[serde(default)]
    pub image_id: Option<u64>,
    pub question_type: String,
    pub answer_type: String,
    #[serde(default)]
    pub multiple_choice_answer: Option<String>,
    pub answers: Vec<Answer>,
}

/// The annotations, in file order, and where they came from (named in errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Annotations {
    pub source: String,
    pub annotations: Vec<Annotation>,
}

/// One entry of a results file `[{"question_id", "answer"}]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Prediction {
    pub question_id: u64,
    pub answer: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Results {
    pub source: String,
    pub results: Vec<Prediction>,
}

/// One question of a VQA questions file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Question {
    pub question_id: u64,
    #[serde(default)]
    pub image_id: Option<u64>,
    #[serde(default)]
    pub question: String,
    #[serde(default)]
    pub multiple_choices: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Questions {
    pub source: String,
    pub task_type: Option<String>,
    pub questions: Vec<Question>,
}

#[derive(Deserialize)]
struct AnnotationsFile {
    annotations: Vec<Annotation>,
}

#[derive(Deserialize)]
struct QuestionsFile {
    #[serde(default)]
    task_type: Option<String>,
    questions: Vec<Question>,
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    crate::files::read_json(path, MAX_JSON_BYTES)
}

/// A VQA v2 annotations file (`{"annotations": [...]}`).
pub fn read_annotations(path: &Path) -> Result<Annotations> {
    let file: AnnotationsFile = read_json(path)?;
    Ok(Annotations {
        source: path.display().to_string(),
        annotations: file.annotations,
    })
}

/// A results file: a JSON array of `{"question_id", "answer"}`.
pub fn read_results(path: &Path) -> Result<Results> {
    Ok(Results {
        source: path.display().to_string(),
        results: read_json(path)?,
    })
}

/// A VQA questions file (`{"task_type", "questions": [...]}`).
pub fn read_questions(path: &Path) -> Result<Questions> {
    let file: QuestionsFile = read_json(path)?;
    Ok(Questions {
        source: path.display().to_string(),
        task_type: file.task_type,
        questions: file.questions,
    })
}

/// Python's `str.isspace` (what `split()` and `strip()` use): Unicode White_Space plus the
/// separators U+001C..U+001F, which Rust's `char::is_whitespace` leaves out.
fn py_is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

fn is_digit(c: char) -> bool {
    let mut buf = [0u8; 4];
    DIGIT.is_match(c.encode_utf8(&mut buf))
}

/// Python's `round(x, n)` on a float: the correctly rounded decimal (ties to even on the exact
/// binary value), which is what Rust's `{:.n}` formatting gives.
pub fn py_round(x: f64, decimals: usize) -> f64 {
    format!("{x:.decimals$}").parse().unwrap_or(x)
}

/// What vqaEval does to every answer and prediction first: tabs and newlines to spaces, stripped.
fn clean(text: &str) -> String {
    text.replace(['\n', '\t'], " ")
        .trim_matches(py_is_space)
        .to_string()
}

/// vqaEval's `processPunctuation`: each punctuation mark is deleted when it touches a space in the
/// input (or the input has a digit-comma-digit anywhere), otherwise it becomes a space; then
/// periods not followed by a digit are deleted.
fn process_punctuation(text: &str) -> String {
    let digit_comma = COMMA_STRIP.is_match(text);
    let mut out = text.to_string();
    for p in PUNCT {
        // The test reads the original text, not the partly replaced one, as vqaEval does.
        let touches_space = text.contains(&format!("{p} ")) || text.contains(&format!(" {p}"));
        let with = if touches_space || digit_comma {
            ""
        } else {
            " "
        };
        out = out.replace(p, with);
    }
    strip_periods(&out)
}

/// `periodStrip = (?!<=\d)(\.)(?!\d)`: the intended look-behind is written as a look-ahead for
/// "<=" + digit, which never matches before a period, so every period not followed by a digit is
/// deleted, but at most 32 of them (`re.UNICODE` passed as `count`).
fn strip_periods(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut removed = 0;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let before_digit = chars.peek().is_some_and(|&n| is_digit(n));
        if c == '.' && !before_digit && removed < PERIOD_COUNT {
            removed += 1;
            continue;
        }
        out.push(c);
    }
    out
}

/// vqaEval's `processDigitArticle`: lower case, split on white space, number words to digits,
/// articles dropped, contractions given their apostrophe, joined by single spaces.
fn process_digit_article(text: &str) -> String {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower
        .split(py_is_space)
        .filter(|w| !w.is_empty())
        .map(|w| {
            NUMBER_WORDS
                .iter()
                .find(|(word, _)| *word == w)
                .map_or(w, |(_, digit)| *digit)
        })
        .filter(|w| !ARTICLES.contains(w))
        .map(|w| CONTRACTION_MAP.get(w).copied().unwrap_or(w))
        .collect();
    words.join(" ")
}

/// The form vqaEval compares answers in when the human answers differ: cleaned (tabs and newlines
/// to spaces, stripped), then `processPunctuation`, then `processDigitArticle`.
pub fn normalize_answer(answer: &str) -> String {
    process_digit_article(&process_punctuation(&clean(answer)))
}

/// The accuracy (0..1) of `prediction` against `answers` (not empty), and the prediction as
/// compared.
fn question_accuracy(answers: &[Answer], prediction: &str) -> (f64, String) {
    let mut gts: Vec<String> = answers.iter().map(|a| clean(&a.answer)).collect();
    let mut pred = clean(prediction);
    // vqaEval normalises only when `len(set(gtAnswers)) > 1`.
    if gts.windows(2).any(|w| w[0] != w[1]) {
        gts = gts.iter().map(|a| normalize_answer(a)).collect();
        pred = normalize_answer(&pred);
    }
    let matches = gts.iter().filter(|a| **a == pred).count();
    // Leaving out answer i leaves `matches` or `matches - 1` equal answers; summed in order, as
    // vqaEval's `sum(gtAcc)`, so that the float is the same.
    let mut sum = 0.0f64;
    for a in &gts {
        let others = matches - usize::from(*a == pred);
        sum += (others as f64 / 3.0).min(1.0);
    }
    (sum / gts.len() as f64, pred)
}

/// One question's score.
#[derive(Debug, Clone, PartialEq)]
pub struct QuestionScore {
    pub question_id: u64,
    pub question_type: String,
    pub answer_type: String,
    /// The prediction as it was compared (normalised or only cleaned, see the module doc).
    pub compared: String,
    /// vqaEval's `avgGTAcc` (0..1), summed for the averages.
    pub fraction: f64,
    /// `100 * fraction`, not rounded (vqaEval's `evalQA` is this rounded to 2 decimals).
    pub accuracy: f64,
}

/// vqaEval's report.
#[derive(Debug, Clone, PartialEq)]
pub struct VqaScores {
    /// Per question, in annotation order.
    pub questions: Vec<QuestionScore>,
    /// Overall accuracy in percent, rounded as vqaEval rounds it (`round(x, 2)`).
    pub accuracy: f64,
    /// The same before rounding.
    pub accuracy_unrounded: f64,
    /// Percent, rounded to 2 decimals, with the number of questions of each type.
    pub per_question_type: BTreeMap<String, (f64, usize)>,
    pub per_answer_type: BTreeMap<String, (f64, usize)>,
}

/// A results file's answers by question id, after checking that they answer exactly the
/// annotated questions, once each (vqaEval asserts the result set equals the annotation set).
fn index_results<'r>(
    annotations: &Annotations,
    results: &'r Results,
) -> Result<HashMap<u64, &'r str>> {
    let mut annotated = HashSet::with_capacity(annotations.annotations.len());
    for ann in &annotations.annotations {
        if !annotated.insert(ann.question_id) {
            return Err(EvalError::input(
                format!("{} question {}", annotations.source, ann.question_id),
                "annotated twice",
            ));
        }
    }
    let mut answers = HashMap::with_capacity(results.results.len());
    for r in &results.results {
        let what = || format!("{} question {}", results.source, r.question_id);
        if !annotated.contains(&r.question_id) {
            return Err(EvalError::input(
                what(),
                format!(
                    "not a question of {} (vqaEval requires the results to answer exactly the \
                     annotated questions)",
                    annotations.source
                ),
            ));
        }
        if answers.insert(r.question_id, r.answer.as_str()).is_some() {
            return Err(EvalError::input(
                what(),
                "answered more than once (vqaEval would silently keep the last answer)",
            ));
        }
    }
    let missing: Vec<String> = annotations
        .annotations
        .iter()
        .filter(|a| !answers.contains_key(&a.question_id))
        .map(|a| a.question_id.to_string())
        .collect();
    if let Some(first) = missing.first() {
        let shown = missing
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        return Err(EvalError::input(
            format!("{} question {first}", results.source),
            format!(
                "no answer for {} of the {} questions of {} (first: {shown}); vqaEval requires \
                 the results to answer exactly the annotated questions",
                missing.len(),
                annotations.annotations.len(),
                annotations.source
            ),
        ));
    }
    Ok(answers)
}

/// At least one answer, and distinct answer ids (see the module doc).
fn check_answers(source: &str, ann: &Annotation) -> Result<()> {
    let what = || format!("{source} question {}", ann.question_id);
    if ann.answers.is_empty() {
        return Err(EvalError::input(what(), "no human answers"));
    }
    let mut ids = HashSet::with_capacity(ann.answers.len());
    for a in &ann.answers {
        if !ids.insert(a.answer_id) {
            return Err(EvalError::input(
                what(),
                format!(
                    "answer_id {} appears twice (vqaEval would leave out both records from every \
                     leave-one-out subset: refused)",
                    a.answer_id
                ),
            ));
        }
    }
    Ok(())
}

/// VQA accuracy of `results` on `annotations`, as vqaEval computes it.
pub fn evaluate(annotations: &Annotations, results: &Results) -> Result<VqaScores> {
    if annotations.annotations.is_empty() {
        return Err(EvalError::input(
            annotations.source.clone(),
            "no annotated questions",
        ));
    }
    let answers = index_results(annotations, results)?;
    let mut questions = Vec::with_capacity(annotations.annotations.len());
    let mut not_ten = 0usize;
    for ann in &annotations.annotations {
        check_answers(&annotations.source, ann)?;
        not_ten += usize::from(ann.answers.len() != 10);
        let prediction = answers.get(&ann.question_id).copied().unwrap_or_default();
        let (acc, compared) = question_accuracy(&ann.answers, prediction);
        questions.push(QuestionScore {
            question_id: ann.question_id,
            question_type: ann.question_type.clone(),
            answer_type: ann.answer_type.clone(),
            compared,
            fraction: acc,
            accuracy: 100.0 * acc,
        });
    }
    if not_ten > 0 {
        tracing::warn!(
            "{}: {not_ten} questions do not have 10 answers; scored with the same leave-one-out \
             mean over their answers",
            annotations.source
        );
    }
    Ok(VqaScores::from_questions(questions))
}

/// Read the three files and evaluate (`questions` only checks, see [`check_questions`]).
pub fn evaluate_files(
    annotations: &Path,
    results: &Path,
    questions: Option<&Path>,
) -> Result<VqaScores> {
    let annotations = read_annotations(annotations)?;
    let results = read_results(results)?;
    if let Some(q) = questions {
        check_questions(&read_questions(q)?, &annotations, &results)?;
    }
    evaluate(&annotations, &results)
}

/// What the questions file adds in vqaEval: every annotated question must be in it, and for a
/// "Multiple Choice" task (`task_type` spelt as vqa.py compares it) each answer must be one of
/// the question's `multiple_choices`, compared before any normalisation.
pub fn check_questions(
    questions: &Questions,
    annotations: &Annotations,
    results: &Results,
) -> Result<()> {
    let by_id: HashMap<u64, &Question> = questions
        .questions
        .iter()
        .map(|q| (q.question_id, q))
        .collect();
    for ann in &annotations.annotations {
        if !by_id.contains_key(&ann.question_id) {
            return Err(EvalError::input(
                format!("{} question {}", annotations.source, ann.question_id),
                format!("not in the questions file {}", questions.source),
            ));
        }
    }
    if questions.task_type.as_deref() != Some("Multiple Choice") {
        return Ok(());
    }
    for r in &results.results {
        let choices = by_id
            .get(&r.question_id)
            .and_then(|q| q.multiple_choices.as_ref());
        if !choices.is_some_and(|c| c.contains(&r.answer)) {
            return Err(EvalError::input(
                format!("{} question {}", results.source, r.question_id),
                format!(
                    "answer {:?} is not one of the multiple choices of {}",
                    r.answer, questions.source
                ),
            ));
        }
    }
    Ok(())
}

/// Running sums in question order (Python's `sum` over the list vqaEval builds).
#[derive(Default)]
struct Mean {
    sum: f64,
    n: usize,
}

impl Mean {
    fn add(&mut self, x: f64) {
        self.sum += x;
        self.n += 1;
    }
    /// vqaEval's `round(100*float(sum(acc))/len(acc), n)`, on fractions (0..1).
    fn percent(&self) -> f64 {
        100.0 * self.sum / self.n as f64
    }
}

impl VqaScores {
    fn from_questions(questions: Vec<QuestionScore>) -> Self {
        let mut overall = Mean::default();
        let mut by_q: BTreeMap<String, Mean> = BTreeMap::new();
        let mut by_a: BTreeMap<String, Mean> = BTreeMap::new();
        for q in &questions {
            // vqaEval sums the fractions and multiplies by 100 after.
            let acc = q.fraction;
            overall.add(acc);
            by_q.entry(q.question_type.clone()).or_default().add(acc);
            by_a.entry(q.answer_type.clone()).or_default().add(acc);
        }
        let report = |m: BTreeMap<String, Mean>| {
            m.into_iter()
                .map(|(k, v)| (k, (py_round(v.percent(), PRECISION), v.n)))
                .collect()
        };
        let unrounded = overall.percent();
        Self {
            questions,
            accuracy: py_round(unrounded, PRECISION),
            accuracy_unrounded: unrounded,
            per_question_type: report(by_q),
            per_answer_type: report(by_a),
        }
    }
}

impl VqaScores {
    /// vqaEval's `accuracy` dict under `"accuracy"` (`overall`, `perQuestionType`,
    /// `perAnswerType`, percent rounded to 2 decimals), and the number of questions.
    pub fn to_json(&self) -> Value {
        let values = |m: &BTreeMap<String, (f64, usize)>| -> serde_json::Map<String, Value> {
            m.iter().map(|(k, (v, _))| (k.clone(), json!(v))).collect()
        };
        json!({
            "accuracy": {
                "overall": self.accuracy,
                "perQuestionType": values(&self.per_question_type),
                "perAnswerType": values(&self.per_answer_type),
            },
            "questions": self.questions.len(),
        })
    }

    /// vqaEval's `evalQA`: question id (as a string, JSON keys) -> percent rounded to 2 decimals.
    pub fn eval_qa(&self) -> Value {
        let map: serde_json::Map<String, Value> = self
            .questions
            .iter()
            .map(|q| {
                (
                    q.question_id.to_string(),
                    json!(py_round(q.accuracy, PRECISION)),
                )
            })
            .collect();
        Value::Object(map)
    }

    /// A plain-text report: overall, per answer type, per question type (as vqaEvalDemo prints,
    /// `%.02f`), with question counts.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let n = self.questions.len();
        let _ = writeln!(out, "VQA accuracy (vqaEval), {n} questions");
        let _ = writeln!(out, "{:<32} {:>7.2}", "overall", self.accuracy);
        for (title, map) in [
            ("per answer type", &self.per_answer_type),
            ("per question type", &self.per_question_type),
        ] {
            let _ = writeln!(out, "{title}:");
            for (k, (v, count)) in map {
                let _ = writeln!(out, "  {k:<30} {v:>7.2}  ({count})");
            }
        }
        out
    }
}
