//! The supervised fine-tuning (SFT) stage's pure parts (paper §4 and Appendix E): every task of
//! Table 5 with its prompt templates, rendered into text and image documents separated by
//! `<break>`, and §E.1's up/down sampling of the task mixture ("a threshold of 3/0.3"); and
//! `cm3 sft build`, which reads task sources and writes the mixture as a prepared directory in
//! the pretrained model's vocabulary.

pub mod build;
pub mod cache;
pub mod canny;
pub mod embedded;
pub mod error;
pub mod mixing;
pub mod sources;
pub mod templates;

pub use build::{SftBuildOptions, SftBuildReport, SftConfig, build};
pub use error::{Result, SftError};
pub use mixing::{
    Balance, MixConfig, MixPlan, TaskDraw, TaskShare, draw, draw_task, plan, repeats, table5_sizes,
};
pub use templates::{
    Example, FieldSpan, ImageSlot, NOTES, Output, OutputSpan, Rendered, RenderedTemplate, Segment,
    Task, TaskSpec, choose, choose_with, objects_text, render,
};
