//! Errors of the SFT stage. Every variant names the task, template, field or setting involved.
use std::path::PathBuf;

use crate::templates::{ImageSlot, Task};

#[derive(Debug, thiserror::Error)]
pub enum SftError {
    /// A task source that cannot be read as its format says.
    #[error("input {path}: {reason}")]
    Input { path: PathBuf, reason: String },
    /// The pretrained run or dataset the SFT data must match.
    #[error("pretrained {path}: {reason}")]
    Pretrained { path: PathBuf, reason: String },
    /// The output directory: not ours, or already built.
    #[error("{path}: {reason}")]
    Output { path: PathBuf, reason: String },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sft config: {0}")]
    Config(String),
    #[error(transparent)]
    Pack(#[from] cm3_pack::PackError),
    #[error(transparent)]
    Tokenize(#[from] cm3_tokenize::TokenizeError),
    #[error(transparent)]
    Core(#[from] cm3_core::CoreError),
    #[error("unknown SFT task {name:?}; the tasks are {}", Task::names().join(", "))]
    UnknownTask { name: String },
    #[error("unknown image slot {name:?}; the slots are source, edited, feature, image")]
    UnknownSlot { name: String },
    #[error("task {task}: there is no template {template} (the task has {count})")]
    NoSuchTemplate {
        task: Task,
        template: usize,
        count: usize,
    },
    #[error("task {task}, template {template}: no value for the field {{{field}}}")]
    MissingField {
        task: Task,
        template: usize,
        field: &'static str,
    },
    /// A field no template of the task uses: most likely a misspelt name.
    #[error(
        "task {task}, template {template}: {field:?} is not a field of the task (its fields: {})",
        task.fields().into_iter().collect::<Vec<_>>().join(", ")
    )]
    UnknownField {
        task: Task,
        template: usize,
        field: String,
    },
    #[error("task {task}, template {template}: no image for the slot {slot}")]
    MissingImage {
        task: Task,
        template: usize,
        slot: ImageSlot,
    },
    #[error("task {task}, template {template}: the task has no image slot {slot}")]
    UnknownImage {
        task: Task,
        template: usize,
        slot: ImageSlot,
    },
    /// Table 5 itself is wrong here; the crate's tests rule this out.
    #[error("task {task}, template {template}: the template does not contain the task's output")]
    NoOutput { task: Task, template: usize },
    #[error("task {task}: no template can be filled from the example's fields ({fields})")]
    NoTemplate { task: Task, fields: String },
    /// A mixing setting out of its range.
    #[error("{setting} = {value}: {reason}")]
    InvalidSetting {
        setting: &'static str,
        value: f64,
        reason: &'static str,
    },
    #[error("the mixture has no task")]
    EmptyMixture,
    #[error("task {task} is listed twice in the mixture")]
    DuplicateTask { task: Task },
    #[error("task {task} has no examples, so it cannot be up- or down-sampled")]
    EmptyTask { task: Task },
    #[error("task {task} has no weight (the weights must cover every task of the mixture)")]
    MissingWeight { task: Task },
    #[error("a weight is given for task {task}, which is not in the mixture")]
    UnknownWeight { task: Task },
    #[error("task {task}: weight {weight} must be finite and positive")]
    InvalidWeight { task: Task, weight: f64 },
}

pub type Result<T> = std::result::Result<T, SftError>;

pub(crate) fn io(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> SftError {
    let path = path.into();
    move |source| SftError::Io { op, path, source }
}
