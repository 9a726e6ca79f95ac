//! Table 5 of the paper: the SFT tasks, their sizes and their prompt templates, word for word.
//!
//! A template is a list of documents, text or image, that the pack stage separates with
//! `<break>` (the table's `&lt;br&gt;`). Text documents hold `{field}` placeholders; image
//! documents name the slot of the example's image that goes there. How the table was read:
//!
//! - `<br/>` inside a cell is a line wrap of the PDF, so it is a space (or separates two
//!   templates of one cell, each of which ends with its image).
//! - `[newline]`, with the spaces the table sets around it, is one `\n`.
//! - Spelling and punctuation are the paper's, curly apostrophes (`children’s`, `Let’s`) and
//!   odd grammar ("in very detail") included.
//! - Each oddity normalised (a misnamed slot, a placeholder written without braces, a repeated
//!   template) is in [`NOTES`] and in the doc comment of the task's [`Task`] variant.
//!
//! The text tasks put the caption or answer before the image, as the table does: a plain
//! left-to-right loss on it would not see the image. The CM3 objective (the answer made the
//! masked span and moved to the end, as `cm3-eval`'s zero-shot VQA does) is what conditions it
//! on the image; [`RenderedTemplate::output`] gives the exact bytes for that.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use cm3_core::rng::SplitMix64;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Result, SftError};

/// The 18 datasets of Table 5, in the table's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Task {
    /// The cell writes the instruction without braces (`edit instruction`): it is the field
    /// `{edit_instruction}`. `{image1}` / `{image 2}` are the slots `source` / `edited`.
    InstructPix2Pix,
    Ocr,
    /// `{obj1} at {loc1}, {obj2} at {loc2} ...` is the one field `{objects}` ([`objects_text`]).
    Detection,
    Edge,
    Seg,
    /// The feature image is written `{seg image}` (copied from Seg-to-Image): slot `feature`.
    Hed,
    /// The feature image is written `{seg image}` (copied from Seg-to-Image): slot `feature`.
    Pose,
    Depth,
    /// The feature image is written `{depth image}` (copied from Depth-to-Image): slot `feature`.
    Norm,
    Scribble,
    Coco,
    Flickr30k,
    /// The cell's fourth template repeats the first word for word; it is kept once.
    ImageParagraph,
    LocalizedNarratives,
    /// The image is written `image`, without braces: slot `image`.
    Vqa2,
    /// The image is written `image`, without braces: slot `image`.
    VizWiz,
    /// The first three templates write the image `image`, without braces: slot `image`. The
    /// fourth needs `{context}` and `{choices_text}`, which OK-VQA lacks ([`choose_with`] skips
    /// it for such examples).
    Okvqa,
    /// `{ explanation}` has a stray space inside the braces: field `explanation`. The output is
    /// the answer; the explanation's span is in [`RenderedTemplate::fields`].
    ScienceQa,
}

/// Which of the example's images fills an image document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ImageSlot {
    /// InstructPix2Pix's image before the edit (`{image1}`).
    Source,
    /// InstructPix2Pix's image after the edit (`{image 2}`), the task's output.
    Edited,
    /// The control image of an X-to-Image task: edges, segmentation, HED, pose, depth, normals or
    /// scribbles (`{edge image}`, `{seg image}`, ...).
    Feature,
    /// The example's image (`{image}`, or `image` in the VQA rows).
    Image,
}

/// One document of a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    /// Text with `{field}` placeholders.
    Text(&'static str),
    Image(ImageSlot),
}

/// What the model is taught to produce: the part a later stage masks and scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// A text field (the caption of captioning, the answer of VQA).
    Text(&'static str),
    /// An image slot (the generated image of the image tasks).
    Image(ImageSlot),
}

/// One row of Table 5.
#[derive(Debug)]
pub struct TaskSpec {
    pub task: Task,
    /// The name used on the command line and in configs.
    pub name: &'static str,
    /// The table's "Dataset" column.
    pub dataset: &'static str,
    /// The table's "# Examples" column.
    pub examples: u64,
    /// The table's "Template" column, one list of documents per template.
    pub templates: &'static [&'static [Segment]],
    pub output: Output,
}

use ImageSlot::{Edited, Feature, Image as Img, Source};
use Segment::{Image, Text};

const CAPTIONING: &[&[Segment]] = &[
    &[Text("{caption}"), Image(Img)],
    &[Text("Describe the given picture. {caption}"), Image(Img)],
];

const VQA: &[&[Segment]] = &[
    &[Text("Question: {question} Answer: {answer}."), Image(Img)],
    &[Text("Question: {question}\n{answer}"), Image(Img)],
    &[
        Text("Question: {question} The answer is {answer}."),
        Image(Img),
    ],
];

const OKVQA: &[&[Segment]] = &[
    VQA[0],
    VQA[1],
    VQA[2],
    &[
        Text(
            "Question: {question}\nContext: {context}\nOptions: {choices_text}\nAnswer: {answer}.",
        ),
        Image(Img),
    ],
];

/// Make-high-quality-image-from-X: instruction, control image, caption, generated image.
macro_rules! x_to_image {
    ($instruction:literal) => {
        &[&[
            Text($instruction),
            Image(Feature),
            Text("{caption}"),
            Image(Img),
        ]]
    };
}

/// Table 5, row by row (`TASKS[t as usize].task == t`, tested). What was normalised is in the
/// docs of [`Task`]'s variants and in [`NOTES`].
pub static TASKS: [TaskSpec; 18] = [
    TaskSpec {
        task: Task::InstructPix2Pix,
        name: "instructpix2pix",
        dataset: "InstructPix2Pix",
        examples: 127_000,
        templates: &[&[
            Text("Edit first image following the instruction"),
            Image(Source),
            Text("{edit_instruction}"),
            Image(Edited),
        ]],
        output: Output::Image(Edited),
    },
    TaskSpec {
        task: Task::Ocr,
        name: "ocr",
        dataset: "OCR",
        examples: 300_000,
        templates: &[&[Text("draw \"{ocr_content}\""), Image(Img)]],
        output: Output::Image(Img),
    },
    TaskSpec {
        task: Task::Detection,
        name: "detection",
        dataset: "Object Detection",
        examples: 3_000_000,
        templates: &[&[
            Text("Generate high quality image of {caption} with segmentations {objects}"),
            Image(Img),
        ]],
        output: Output::Image(Img),
    },
    TaskSpec {
        task: Task::Edge,
        name: "edge",
        dataset: "Edge-to-Image",
        examples: 1_000_000,
        templates: x_to_image!("Make high quality image from canny edge features"),
        output: Output::Image(Img),
    },
    TaskSpec {
        task: Task::Seg,
        name: "seg",
        dataset: "Seg-to-Image",
        examples: 1_000_000,
        templates: x_to_image!("Make high quality image from a segmentation map"),
        output: Output::Image(Img),
    },
    TaskSpec {
        task: Task::Hed,
        name: "hed",
        dataset: "Hed-to-Image",
        examples: 1_000_000,
        templates: x_to_image!("Make high quality image from hed features"),
        output: Output::Image(Img),
    },
    TaskSpec {
        task: Task::Pose,
        name: "pose",
        dataset: "Pose-to-Image",
        examples: 142_000,
        templates: x_to_image!("Make high quality image from openpose features"),
        output: Output::Image(Img),
    },
    TaskSpec {
        task: Task::Depth,
        name: "depth",
        dataset: "Depth-to-Image",
        examples: 1_000_000,
        templates: x_to_image!("Make high quality image from depth features"),
        output: Output::Image(Img),
    },
    TaskSpec {
        task: Task::Norm,
        name: "norm",
        dataset: "Norm-to-Image",
        examples: 1_000_000,
        templates: x_to_image!("Make high quality image from 3D norm features"),
        output: Output::Image(Img),
    },
    TaskSpec {
        task: Task::Scribble,
        name: "scribble",
        dataset: "Scribble-to-Image",
        examples: 500_000,
        templates: x_to_image!("Make high quality image from children’s scribbles"),
        output: Output::Image(Img),
    },
    TaskSpec {
        task: Task::Coco,
        name: "coco",
        dataset: "COCO Captioning",
        examples: 591_000,
        templates: CAPTIONING,
        output: Output::Text("caption"),
    },
    TaskSpec {
        task: Task::Flickr30k,
        name: "flickr30k",
        dataset: "Flickr30k",
        examples: 144_000,
        templates: CAPTIONING,
        output: Output::Text("caption"),
    },
    TaskSpec {
        task: Task::ImageParagraph,
        name: "image-paragraph",
        dataset: "Image Paragraph",
        examples: 14_000,
        templates: &[
            &[
                Text("Describe the given picture in very detail. {caption}"),
                Image(Img),
            ],
            &[
                Text("Describe all the objects in the given image in very detail. {caption}"),
                Image(Img),
            ],
            &[
                Text("Generate a long caption for the given image. {caption}"),
                Image(Img),
            ],
        ],
        output: Output::Text("caption"),
    },
    TaskSpec {
        task: Task::LocalizedNarratives,
        name: "localized-narratives",
        dataset: "Localized Narratives",
        examples: 164_000,
        templates: &[
            &[
                Text(
                    "Generate a long narration of what is happening in the given image. {caption}",
                ),
                Image(Img),
            ],
            &[
                Text("Generate a long caption for the given image. {caption}"),
                Image(Img),
            ],
        ],
        output: Output::Text("caption"),
    },
    TaskSpec {
        task: Task::Vqa2,
        name: "vqa2",
        dataset: "VQA2",
        examples: 1_300_000,
        templates: VQA,
        output: Output::Text("answer"),
    },
    TaskSpec {
        task: Task::VizWiz,
        name: "vizwiz",
        dataset: "VizWiz",
        examples: 92_000,
        templates: VQA,
        output: Output::Text("answer"),
    },
    TaskSpec {
        task: Task::Okvqa,
        name: "okvqa",
        dataset: "OKVQA",
        examples: 26_000,
        templates: OKVQA,
        output: Output::Text("answer"),
    },
    TaskSpec {
        task: Task::ScienceQa,
        name: "scienceqa",
        dataset: "ScienceQA",
        examples: 6_000,
        templates: &[&[
            Text(
                "Question: {question}\nContext: {context}\nOptions: {choices_text}\nAnswer: \
                 Let’s think step-by-step: {explanation} So the answer is {answer}.",
            ),
            Image(Img),
        ]],
        output: Output::Text("answer"),
    },
];

const NOTE_VQA_IMAGE: &str = "the image is written `image`, without braces; it is the slot `image`";
const NOTE_NEWLINE: &str =
    "`[newline]`, with the spaces the table sets around it, is one \"\\n\" in the text";

/// Every choice made where Table 5 is odd or silent: (task name, note).
pub const NOTES: &[(&str, &str)] = &[
    (
        "instructpix2pix",
        "the cell writes the instruction without braces (`edit instruction`); it is the \
         example's instruction, so it is the field `{edit_instruction}`",
    ),
    (
        "instructpix2pix",
        "`{image1}` and `{image 2}` (spaced differently) are the slots `source` and `edited`; \
         `edited` is the output",
    ),
    (
        "detection",
        "`{obj1} at {loc1}, {obj2} at {loc2} ...` is one field `{objects}`, which \
         `objects_text` writes as \"obj at loc\" joined by \", \"; how a location is written is \
         not in the paper and is left to the caller",
    ),
    (
        "hed",
        "the feature image is written `{seg image}`; it is the slot `feature` (HED edges)",
    ),
    (
        "pose",
        "the feature image is written `{seg image}`; it is the slot `feature` (OpenPose)",
    ),
    (
        "norm",
        "the feature image is written `{depth image}`; it is the slot `feature` (normals)",
    ),
    (
        "image-paragraph",
        "the fourth template repeats the first word for word; it is kept once, so that a \
         uniform choice does not give the first template double weight",
    ),
    ("vqa2", NOTE_VQA_IMAGE),
    ("vqa2", NOTE_NEWLINE),
    ("vizwiz", NOTE_VQA_IMAGE),
    ("vizwiz", NOTE_NEWLINE),
    ("okvqa", NOTE_VQA_IMAGE),
    ("okvqa", NOTE_NEWLINE),
    (
        "okvqa",
        "the fourth template needs `{context}` and `{choices_text}` (ScienceQA's form), which \
         OK-VQA does not have; it is kept, and `choose_with` picks only templates an example can \
         fill",
    ),
    (
        "scienceqa",
        "`{ explanation}` has a stray space inside the braces; the field is `explanation`",
    ),
    ("scienceqa", NOTE_NEWLINE),
    (
        "scienceqa",
        "the output is `answer`; the explanation before it is model-written too, and its span is \
         in `RenderedTemplate::fields` for a stage that trains on it",
    ),
];

impl Task {
    pub const ALL: [Task; 18] = [
        Task::InstructPix2Pix,
        Task::Ocr,
        Task::Detection,
        Task::Edge,
        Task::Seg,
        Task::Hed,
        Task::Pose,
        Task::Depth,
        Task::Norm,
        Task::Scribble,
        Task::Coco,
        Task::Flickr30k,
        Task::ImageParagraph,
        Task::LocalizedNarratives,
        Task::Vqa2,
        Task::VizWiz,
        Task::Okvqa,
        Task::ScienceQa,
    ];

    pub fn spec(self) -> &'static TaskSpec {
        &TASKS[self as usize]
    }

    pub fn name(self) -> &'static str {
        self.spec().name
    }

    pub fn examples(self) -> u64 {
        self.spec().examples
    }

    pub fn templates(self) -> &'static [&'static [Segment]] {
        self.spec().templates
    }

    pub fn output(self) -> Output {
        self.spec().output
    }

    pub fn names() -> Vec<&'static str> {
        Self::ALL.iter().map(|t| t.name()).collect()
    }

    pub fn from_name(name: &str) -> Result<Task> {
        Self::ALL
            .into_iter()
            .find(|t| t.name() == name)
            .ok_or_else(|| SftError::UnknownTask {
                name: name.to_owned(),
            })
    }

    /// The text fields any template of the task uses.
    pub fn fields(self) -> BTreeSet<&'static str> {
        let mut out = BTreeSet::new();
        for template in self.templates() {
            out.extend(template_fields(template));
        }
        out
    }

    /// The image slots any template of the task uses.
    pub fn images(self) -> BTreeSet<ImageSlot> {
        let mut out = BTreeSet::new();
        for template in self.templates() {
            out.extend(template_images(template));
        }
        out
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Task {
    type Err = SftError;
    fn from_str(s: &str) -> Result<Task> {
        Task::from_name(s)
    }
}

// Configs name tasks as on the command line.
impl Serialize for Task {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Task {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Task, D::Error> {
        let name = String::deserialize(d)?;
        Task::from_name(&name).map_err(serde::de::Error::custom)
    }
}

impl ImageSlot {
    pub const ALL: [ImageSlot; 4] = [Source, Edited, Feature, Img];

    pub fn name(self) -> &'static str {
        match self {
            Source => "source",
            Edited => "edited",
            Feature => "feature",
            Img => "image",
        }
    }

    pub fn from_name(name: &str) -> Result<ImageSlot> {
        Self::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| SftError::UnknownSlot {
                name: name.to_owned(),
            })
    }
}

impl fmt::Display for ImageSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Detection's `{objects}`: Table 5's `{obj1} at {loc1}, {obj2} at {loc2} ...`.
pub fn objects_text<S: AsRef<str>>(objects: &[(S, S)]) -> String {
    let parts: Vec<String> = objects
        .iter()
        .map(|(o, l)| format!("{} at {}", o.as_ref(), l.as_ref()))
        .collect();
    parts.join(", ")
}

/// A piece of a text segment: literal text or a `{field}` placeholder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece<'a> {
    Literal(&'a str),
    Field(&'a str),
}

fn pieces(text: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let Some(len) = rest[open..].find('}') else {
            break;
        };
        if open > 0 {
            out.push(Piece::Literal(&rest[..open]));
        }
        out.push(Piece::Field(&rest[open + 1..open + len]));
        rest = &rest[open + len + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Literal(rest));
    }
    out
}

fn template_fields(template: &[Segment]) -> impl Iterator<Item = &'static str> + '_ {
    template.iter().flat_map(|s| match *s {
        Text(text) => pieces(text)
            .into_iter()
            .filter_map(|p| match p {
                Piece::Field(f) => Some(f),
                Piece::Literal(_) => None,
            })
            .collect(),
        Image(_) => Vec::new(),
    })
}

fn template_images(template: &[Segment]) -> impl Iterator<Item = ImageSlot> + '_ {
    template.iter().filter_map(|s| match *s {
        Image(slot) => Some(slot),
        Text(_) => None,
    })
}

/// One example's values: text fields by name and the image slots it has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Example {
    pub fields: BTreeMap<String, String>,
    pub images: BTreeSet<ImageSlot>,
}

impl Example {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn field(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.fields.insert(name.into(), value.into());
        self
    }

    pub fn image(mut self, slot: ImageSlot) -> Self {
        self.images.insert(slot);
        self
    }

    /// Whether every field and image of the template has a value.
    pub fn fills(&self, template: &[Segment]) -> bool {
        template_fields(template).all(|f| self.fields.contains_key(f))
            && template_images(template).all(|s| self.images.contains(&s))
    }
}

/// A rendered document; consecutive documents are separated by `<break>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rendered {
    Text(String),
    Image(ImageSlot),
}

/// Where a field's value landed: document `segment`, bytes `range` of its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSpan {
    pub field: &'static str,
    pub segment: usize,
    pub range: Range<usize>,
}

/// Where the task's output is in the rendered documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputSpan {
    /// Bytes `range` of text document `segment`: exactly the value, no template text.
    Text { segment: usize, range: Range<usize> },
    /// Image document `segment`.
    Image { segment: usize },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedTemplate {
    pub task: Task,
    pub template: usize,
    pub segments: Vec<Rendered>,
    /// Every substituted value, in order.
    pub fields: Vec<FieldSpan>,
    pub output: OutputSpan,
}

/// Fills template `template` of `task` with the example's values. A field or image the template
/// needs and the example lacks, or one the task has no use for (a misspelling), is an error.
pub fn render(task: Task, template: usize, example: &Example) -> Result<RenderedTemplate> {
    let templates = task.templates();
    let Some(&segs) = templates.get(template) else {
        return Err(SftError::NoSuchTemplate {
            task,
            template,
            count: templates.len(),
        });
    };
    let known = task.fields();
    if let Some(field) = example.fields.keys().find(|f| !known.contains(f.as_str())) {
        return Err(SftError::UnknownField {
            task,
            template,
            field: field.clone(),
        });
    }
    let slots = task.images();
    if let Some(&slot) = example.images.iter().find(|s| !slots.contains(s)) {
        return Err(SftError::UnknownImage {
            task,
            template,
            slot,
        });
    }

    let mut segments = Vec::with_capacity(segs.len());
    let mut fields = Vec::new();
    let mut output = None;
    for (i, seg) in segs.iter().enumerate() {
        match *seg {
            Text(text) => {
                let mut out = String::with_capacity(text.len());
                for piece in pieces(text) {
                    match piece {
                        Piece::Literal(s) => out.push_str(s),
                        Piece::Field(field) => {
                            let Some(value) = example.fields.get(field) else {
                                return Err(SftError::MissingField {
                                    task,
                                    template,
                                    field,
                                });
                            };
                            let range = out.len()..out.len() + value.len();
                            out.push_str(value);
                            if output.is_none() && task.output() == Output::Text(field) {
                                output = Some(OutputSpan::Text {
                                    segment: i,
                                    range: range.clone(),
                                });
                            }
                            fields.push(FieldSpan {
                                field,
                                segment: i,
                                range,
                            });
                        }
                    }
                }
                segments.push(Rendered::Text(out));
            }
            Image(slot) => {
                if !example.images.contains(&slot) {
                    return Err(SftError::MissingImage {
                        task,
                        template,
                        slot,
                    });
                }
                if output.is_none() && task.output() == Output::Image(slot) {
                    output = Some(OutputSpan::Image { segment: i });
                }
                segments.push(Rendered::Image(slot));
            }
        }
    }
    let output = output.ok_or(SftError::NoOutput { task, template })?;
    Ok(RenderedTemplate {
        task,
        template,
        segments,
        fields,
        output,
    })
}

/// Stream of the template choice; the task is xored into the low bits.
const STREAM_TEMPLATE: u64 = 0x7465_6d70_6c00_0000; // "templ"

fn template_rng(task: Task, example_key: u64, seed: u64) -> SplitMix64 {
    SplitMix64::for_pair(seed, STREAM_TEMPLATE ^ task as u64, example_key)
}

/// The template of example `example_key` of `task`, uniform over the task's templates ("multiple
/// prompt templates for each task to make the model robust to prompt variations", §4). It
/// depends only on (seed, task, example_key), so it does not change with the order or split of
/// the work.
pub fn choose(task: Task, example_key: u64, seed: u64) -> usize {
    // Every task has at least one template (tested), so `below` gets n > 0.
    let n = task.templates().len().max(1) as u64;
    template_rng(task, example_key, seed).below(n) as usize
}

/// As [`choose`], but uniform over the templates the example can fill (OK-VQA examples without
/// context and options skip the fourth template). When every template fits, it equals
/// [`choose`].
pub fn choose_with(task: Task, example: &Example, example_key: u64, seed: u64) -> Result<usize> {
    let fitting: Vec<usize> = task
        .templates()
        .iter()
        .enumerate()
        .filter(|(_, t)| example.fills(t))
        .map(|(i, _)| i)
        .collect();
    if fitting.is_empty() {
        let mut have: Vec<&str> = example.fields.keys().map(String::as_str).collect();
        have.extend(example.images.iter().map(|s| s.name()));
        return Err(SftError::NoTemplate {
            task,
            fields: have.join(", "),
        });
    }
    let i = template_rng(task, example_key, seed).below(fitting.len() as u64) as usize;
    Ok(fitting[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_indexed_by_task() {
        for (i, t) in Task::ALL.iter().enumerate() {
            assert_eq!(*t as usize, i);
            assert_eq!(TASKS[i].task, *t);
            assert!(!t.templates().is_empty(), "{t}");
        }
    }

    #[test]
    fn every_template_holds_its_output_exactly_once() {
        for t in Task::ALL {
            for (i, template) in t.templates().iter().enumerate() {
                let n = match t.output() {
                    Output::Text(f) => template_fields(template).filter(|&g| g == f).count(),
                    Output::Image(s) => template_images(template).filter(|&g| g == s).count(),
                };
                assert_eq!(n, 1, "{t} template {i}");
            }
        }
    }

    #[test]
    fn placeholders_are_names_and_texts_have_no_stray_braces() {
        for t in Task::ALL {
            for f in t.fields() {
                assert!(!f.is_empty() && f.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
            }
            for seg in t.templates().iter().flat_map(|s| s.iter()) {
                if let Text(text) = seg {
                    for p in pieces(text) {
                        if let Piece::Literal(l) = p {
                            assert!(!l.contains(['{', '}']), "{t}: {text}");
                        }
                    }
                    assert_eq!(text.trim(), *text, "{t}: documents are trimmed");
                }
            }
        }
    }

    #[test]
    fn notes_name_real_tasks() {
        for (task, note) in NOTES {
            assert!(Task::from_name(task).is_ok(), "{task}");
            assert!(!note.is_empty());
        }
    }

    #[test]
    fn names_round_trip() {
        for t in Task::ALL {
            assert_eq!(t.name().parse::<Task>().ok(), Some(t));
        }
        for s in ImageSlot::ALL {
            assert_eq!(ImageSlot::from_name(s.name()).ok(), Some(s));
        }
        assert!(matches!(
            Task::from_name("vqa"),
            Err(SftError::UnknownTask { .. })
        ));
    }

    #[test]
    fn values_are_not_scanned_for_placeholders() {
        let ex = Example::new()
            .field("caption", "{answer} {caption}")
            .image(Img);
        let r = render(Task::Coco, 1, &ex).expect("must succeed");
        assert_eq!(
            r.segments[0],
            Rendered::Text("Describe the given picture. {answer} {caption}".into())
        );
    }

    #[test]
    fn missing_and_unknown_fields_are_errors_naming_task_template_and_field() {
        let ex = Example::new().field("question", "why?").image(Img);
        let err = render(Task::Vqa2, 2, &ex).expect_err("must fail");
        assert!(matches!(
            err,
            SftError::MissingField {
                task: Task::Vqa2,
                template: 2,
                field: "answer"
            }
        ));
        assert_eq!(
            err.to_string(),
            "task vqa2, template 2: no value for the field {answer}"
        );

        let ex = ex.field("answer", "yes").field("anwser", "yes");
        let err = render(Task::Vqa2, 0, &ex).expect_err("must fail");
        assert!(matches!(&err, SftError::UnknownField { field, .. } if field == "anwser"));
        assert!(err.to_string().contains("answer, question"), "{err}");

        let ex = Example::new().field("caption", "a cat");
        let err = render(Task::Edge, 0, &ex).expect_err("must fail");
        assert!(matches!(
            err,
            SftError::MissingImage {
                task: Task::Edge,
                template: 0,
                slot: Feature
            }
        ));
        let err =
            render(Task::Coco, 0, &ex.clone().image(Img).image(Feature)).expect_err("must fail");
        assert!(matches!(err, SftError::UnknownImage { slot: Feature, .. }));
        let err = render(Task::Coco, 2, &ex).expect_err("must fail");
        assert!(matches!(err, SftError::NoSuchTemplate { count: 2, .. }));
    }

    #[test]
    fn fields_of_other_templates_of_the_task_are_allowed() {
        let ex = Example::new()
            .field("question", "q")
            .field("answer", "a")
            .field("context", "c")
            .field("choices_text", "o")
            .image(Img);
        assert!(render(Task::Okvqa, 0, &ex).is_ok());
    }

    #[test]
    fn choice_is_deterministic_uniform_and_keyed() {
        let mut counts = [0u32; 4];
        for key in 0..40_000 {
            let i = choose(Task::Okvqa, key, 5);
            assert_eq!(i, choose(Task::Okvqa, key, 5));
            counts[i] += 1;
        }
        for c in counts {
            assert!((9_500..10_500).contains(&c), "{counts:?}");
        }
        let differs = |f: &dyn Fn(u64) -> usize| (0..64).any(|k| f(k) != choose(Task::Vqa2, k, 5));
        assert!(
            differs(&|k| choose(Task::Vqa2, k, 6)),
            "the seed changes the choice"
        );
        assert!(
            differs(&|k| choose(Task::VizWiz, k, 5)),
            "tasks have their own streams"
        );
        assert_eq!(choose(Task::Ocr, 123, 9), 0);
    }

    #[test]
    fn choose_with_skips_templates_the_example_cannot_fill() {
        let plain = Example::new()
            .field("question", "q")
            .field("answer", "a")
            .image(Img);
        let full = plain
            .clone()
            .field("context", "c")
            .field("choices_text", "o");
        let mut seen = BTreeSet::new();
        for key in 0..2_000 {
            let i = choose_with(Task::Okvqa, &plain, key, 1).expect("must succeed");
            assert!(i < 3);
            seen.insert(i);
            assert_eq!(
                choose_with(Task::Okvqa, &full, key, 1).expect("must succeed"),
                choose(Task::Okvqa, key, 1)
            );
        }
        assert_eq!(seen.len(), 3);
        let err = choose_with(Task::Okvqa, &Example::new(), 0, 1).expect_err("must fail");
        assert!(matches!(
            err,
            SftError::NoTemplate {
                task: Task::Okvqa,
                ..
            }
        ));
    }

    #[test]
    fn objects_text_is_the_tables_list() {
        assert_eq!(
            objects_text(&[("dog", "<1,2>"), ("cat", "<3,4>")]),
            "dog at <1,2>, cat at <3,4>"
        );
        assert_eq!(objects_text::<&str>(&[]), "");
    }
}
