//! The progress bar the shard stages show.
use indicatif::{ProgressBar, ProgressStyle};

/// A bar over `rows` pairs labelled with the stage's name, or a hidden one.
pub fn pairs_bar(show: bool, stage: &str, rows: u64) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(rows);
    b.set_style(
        ProgressStyle::with_template(&format!(
            "{stage} {{bar:30}} {{pos}}/{{len}} pairs ({{per_sec}}) [{{elapsed_precise}}, eta {{eta}}]"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    b
}
