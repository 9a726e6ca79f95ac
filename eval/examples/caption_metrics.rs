//! Caption metrics of a COCO results file against references, as JSON (pycocoevalcap's names).
//!
//! cargo run -p cm3-eval --release --example caption_metrics -- \
//!     --predictions results.json --references captions_val2017.json [--per-image] [--table]

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value_of = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let (Some(predictions), Some(references)) =
        (value_of("--predictions"), value_of("--references"))
    else {
        eprintln!("usage: caption_metrics --predictions P --references R [--per-image] [--table]");
        return ExitCode::from(2);
    };
    let started = std::time::Instant::now();
    let scores = match cm3_eval::captions::evaluate_files(&predictions, &references) {
        Ok(scores) => scores,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    if args.iter().any(|a| a == "--table") {
        print!("{}", scores.table());
        return ExitCode::SUCCESS;
    }
    let mut out = scores.to_json();
    out["seconds"] = serde_json::json!(seconds);
    if args.iter().any(|a| a == "--per-image") {
        out["per_image"] = scores.per_image_json();
    }
    println!("{out}");
    ExitCode::SUCCESS
}
