//! Golden tests: every template of Table 5, filled with a fixed example, reads as the paper's
//! cell with the values put in. The expected documents are written out by hand from the paper,
//! not generated from the crate's table.
use std::collections::BTreeSet;

use cm3_sft::templates::{TASKS, objects_text};
use cm3_sft::{Example, ImageSlot, NOTES, OutputSpan, Rendered, Task, render};

fn t(s: &str) -> Rendered {
    Rendered::Text(s.to_owned())
}

const SOURCE: Rendered = Rendered::Image(ImageSlot::Source);
const EDITED: Rendered = Rendered::Image(ImageSlot::Edited);
const FEATURE: Rendered = Rendered::Image(ImageSlot::Feature);
const IMAGE: Rendered = Rendered::Image(ImageSlot::Image);

fn caption(c: &str) -> Example {
    Example::new().field("caption", c).image(ImageSlot::Image)
}

fn control(c: &str) -> Example {
    caption(c).image(ImageSlot::Feature)
}

fn vqa() -> Example {
    Example::new()
        .field("question", "What color is the bench?")
        .field("answer", "blue")
        .image(ImageSlot::Image)
}

/// (task, template, example, expected documents, the output's value if text)
type Case = (Task, usize, Example, Vec<Rendered>, Option<&'static str>);

fn cases() -> Vec<Case> {
    let car = "a red car on a road";
    let x_to_image = |task, instruction: &str| {
        (
            task,
            0,
            control(car),
            vec![t(instruction), FEATURE, t(car), IMAGE],
            None,
        )
    };
    let dogs = "two dogs play in the snow";
    let para = "A kitchen with a window. The counter is white.";
    let narr = "In this image we can see a person riding a bicycle.";
    let mut out = vec![
        (
            Task::InstructPix2Pix,
            0,
            Example::new()
                .field("edit_instruction", "make it snowy")
                .image(ImageSlot::Source)
                .image(ImageSlot::Edited),
            vec![
                t("Edit first image following the instruction"),
                SOURCE,
                t("make it snowy"),
                EDITED,
            ],
            None,
        ),
        (
            Task::Ocr,
            0,
            Example::new()
                .field("ocr_content", "OPEN 24 HOURS")
                .image(ImageSlot::Image),
            vec![t("draw \"OPEN 24 HOURS\""), IMAGE],
            None,
        ),
        (
            Task::Detection,
            0,
            Example::new()
                .field("caption", "a dog and a cat")
                .field(
                    "objects",
                    objects_text(&[("dog", "<10 20 30 40>"), ("cat", "<50 60 70 80>")]),
                )
                .image(ImageSlot::Image),
            vec![
                t(
                    "Generate high quality image of a dog and a cat with segmentations dog at <10 20 30 40>, cat at <50 60 70 80>",
                ),
                IMAGE,
            ],
            None,
        ),
        x_to_image(
            Task::Edge,
            "Make high quality image from canny edge features",
        ),
        x_to_image(Task::Seg, "Make high quality image from a segmentation map"),
        x_to_image(Task::Hed, "Make high quality image from hed features"),
        x_to_image(Task::Pose, "Make high quality image from openpose features"),
        x_to_image(Task::Depth, "Make high quality image from depth features"),
        x_to_image(Task::Norm, "Make high quality image from 3D norm features"),
        x_to_image(
            Task::Scribble,
            "Make high quality image from children\u{2019}s scribbles",
        ),
        (
            Task::Coco,
            0,
            caption(dogs),
            vec![t("two dogs play in the snow"), IMAGE],
            Some(dogs),
        ),
        (
            Task::Coco,
            1,
            caption(dogs),
            vec![
                t("Describe the given picture. two dogs play in the snow"),
                IMAGE,
            ],
            Some(dogs),
        ),
        (
            Task::Flickr30k,
            0,
            caption(dogs),
            vec![t("two dogs play in the snow"), IMAGE],
            Some(dogs),
        ),
        (
            Task::Flickr30k,
            1,
            caption(dogs),
            vec![
                t("Describe the given picture. two dogs play in the snow"),
                IMAGE,
            ],
            Some(dogs),
        ),
        (
            Task::ImageParagraph,
            0,
            caption(para),
            vec![
                t(
                    "Describe the given picture in very detail. A kitchen with a window. The counter is white.",
                ),
                IMAGE,
            ],
            Some(para),
        ),
        (
            Task::ImageParagraph,
            1,
            caption(para),
            vec![
                t(
                    "Describe all the objects in the given image in very detail. A kitchen with a window. The counter is white.",
                ),
                IMAGE,
            ],
            Some(para),
        ),
        (
            Task::ImageParagraph,
            2,
            caption(para),
            vec![
                t(
                    "Generate a long caption for the given image. A kitchen with a window. The counter is white.",
                ),
                IMAGE,
            ],
            Some(para),
        ),
        (
            Task::LocalizedNarratives,
            0,
            caption(narr),
            vec![
                t(
                    "Generate a long narration of what is happening in the given image. In this image we can see a person riding a bicycle.",
                ),
                IMAGE,
            ],
            Some(narr),
        ),
        (
            Task::LocalizedNarratives,
            1,
            caption(narr),
            vec![
                t(
                    "Generate a long caption for the given image. In this image we can see a person riding a bicycle.",
                ),
                IMAGE,
            ],
            Some(narr),
        ),
    ];
    for task in [Task::Vqa2, Task::VizWiz, Task::Okvqa] {
        out.push((
            task,
            0,
            vqa(),
            vec![t("Question: What color is the bench? Answer: blue."), IMAGE],
            Some("blue"),
        ));
        out.push((
            task,
            1,
            vqa(),
            vec![t("Question: What color is the bench?\nblue"), IMAGE],
            Some("blue"),
        ));
        out.push((
            task,
            2,
            vqa(),
            vec![
                t("Question: What color is the bench? The answer is blue."),
                IMAGE,
            ],
            Some("blue"),
        ));
    }
    out.push((
        Task::Okvqa,
        3,
        vqa().field("context", "A park in summer.").field("choices_text", "(A) blue (B) red"),
        vec![
            t("Question: What color is the bench?\nContext: A park in summer.\nOptions: (A) blue (B) red\nAnswer: blue."),
            IMAGE,
        ],
        Some("blue"),
    ));
    out.push((
        Task::ScienceQa,
        0,
        Example::new()
            .field("question", "Which is a mammal?")
            .field("context", "Select the best answer.")
            .field("choices_text", "(A) frog (B) whale")
            .field("explanation", "Whales feed their young milk.")
            .field("answer", "(B) whale")
            .image(ImageSlot::Image),
        vec![
            t("Question: Which is a mammal?\nContext: Select the best answer.\nOptions: (A) frog (B) whale\nAnswer: Let\u{2019}s think step-by-step: Whales feed their young milk. So the answer is (B) whale."),
            IMAGE,
        ],
        Some("(B) whale"),
    ));
    out
}

#[test]
fn every_template_renders_as_the_paper_writes_it() {
    let mut covered = BTreeSet::new();
    for (task, template, example, expected, output) in cases() {
        let r = render(task, template, &example)
            .unwrap_or_else(|e| panic!("{task} template {template}: {e}"));
        assert_eq!(r.segments, expected, "{task} template {template}");
        match (&r.output, output) {
            (OutputSpan::Text { segment, range }, Some(value)) => {
                let Rendered::Text(text) = &r.segments[*segment] else {
                    panic!("{task}: output in an image document");
                };
                assert_eq!(&text[range.clone()], value, "{task} template {template}");
            }
            (OutputSpan::Image { segment }, None) => {
                assert_eq!(
                    *segment,
                    expected.len() - 1,
                    "{task}: the generated image is last"
                );
            }
            (o, v) => panic!("{task} template {template}: output {o:?}, expected {v:?}"),
        }
        assert!(
            covered.insert((task, template)),
            "{task} template {template} twice"
        );
    }
    let all: BTreeSet<(Task, usize)> = Task::ALL
        .iter()
        .flat_map(|&task| (0..task.templates().len()).map(move |i| (task, i)))
        .collect();
    assert_eq!(
        covered, all,
        "every template of every task has a golden case"
    );
    assert_eq!(all.len(), 30);
}

#[test]
fn the_tasks_and_counts_are_table5s() {
    let names: Vec<&str> = Task::ALL.iter().map(|t| t.name()).collect();
    assert_eq!(
        names,
        [
            "instructpix2pix",
            "ocr",
            "detection",
            "edge",
            "seg",
            "hed",
            "pose",
            "depth",
            "norm",
            "scribble",
            "coco",
            "flickr30k",
            "image-paragraph",
            "localized-narratives",
            "vqa2",
            "vizwiz",
            "okvqa",
            "scienceqa",
        ]
    );
    let counts: Vec<u64> = TASKS.iter().map(|s| s.examples).collect();
    assert_eq!(
        counts,
        [
            127_000, 300_000, 3_000_000, 1_000_000, 1_000_000, 1_000_000, 142_000, 1_000_000,
            1_000_000, 500_000, 591_000, 144_000, 14_000, 164_000, 1_300_000, 92_000, 26_000,
            6_000,
        ]
    );
    let templates: Vec<usize> = Task::ALL.iter().map(|t| t.templates().len()).collect();
    assert_eq!(
        templates,
        [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 2, 3, 3, 4, 1]
    );
    let datasets: Vec<&str> = TASKS.iter().map(|s| s.dataset).collect();
    assert_eq!(datasets[12], "Image Paragraph");
    assert!(NOTES.iter().any(|(task, _)| *task == "image-paragraph"));
}
