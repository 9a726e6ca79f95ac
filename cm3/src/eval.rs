//! `cm3 eval`: the paper's metrics on files (captions, VQA, FID, CLIP score) and the zero-shot
//! protocols that produce what they score from a trained run (t2i, i2t, VQA with `--run`).
//! Everything is in `cm3_eval`; this parses arguments and prints.
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use cm3_eval::zero_shot::{i2t, t2i, vqa as vqa_protocol};

#[derive(Subcommand, Debug)]
pub(crate) enum EvalCommand {
    /// Caption metrics as pycocoevalcap computes them (PTB tokenisation, BLEU-1..4, ROUGE-L,
    /// CIDEr-D): a COCO results list against a COCO captions file or {"image_id": [captions]}.
    Captions {
        #[arg(long)]
        predictions: PathBuf,
        #[arg(long)]
        references: PathBuf,
        /// One JSON object naming each metric as pycocoevalcap does.
        #[arg(long)]
        json: bool,
        /// Also print each image's scores (with --json).
        #[arg(long)]
        per_image: bool,
    },
    /// VQA accuracy as the official vqaEval computes it; with --run, answer the questions
    /// first (Table 5's prompt form, zero-shot) and score the answers.
    Vqa(Box<VqaArgs>),
    /// FID between two folders of images, pytorch-fid's protocol (Inception-v3 pool features
    /// from an ONNX export of its network: scripts/export-inception-onnx.py).
    Fid {
        #[arg(long)]
        inception: PathBuf,
        dir_a: PathBuf,
        dir_b: PathBuf,
        #[arg(long, default_value_t = 50)]
        batch: usize,
        /// ONNX Runtime intra-op threads (0: its choice).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        #[arg(long)]
        json: bool,
    },
    /// Zero-shot text → image on COCO captions: N samples a prompt (CD-K and CFG mixed), CLIP
    /// re-ranking, retrieved documents, then FID and CLIP score (Table 1's protocol).
    T2i(Box<T2iArgs>),
    /// Zero-shot image → text through the CM3 infill prompt, then the caption metrics.
    I2t(Box<I2tArgs>),
}

#[derive(Args, Debug)]
pub(crate) struct VqaArgs {
    /// Results `[{"question_id", "answer"}]` to score (without --run).
    #[arg(long, required_unless_present = "run")]
    predictions: Option<PathBuf>,
    /// VQA v2 annotations (the ten answers of each question).
    #[arg(long)]
    annotations: PathBuf,
    /// VQA v2 questions; checked against the annotations (and, with --run, answered).
    #[arg(long)]
    questions: Option<PathBuf>,
    /// Answer the questions with this run first.
    #[arg(long, requires_all = ["questions", "images", "out"])]
    run: Option<PathBuf>,
    /// The questions' images (file names carrying the COCO image id).
    #[arg(long)]
    images: Option<PathBuf>,
    /// Where the answers (answers.jsonl), the settings and the report go (required with
    /// --run).
    #[arg(long)]
    out: Option<PathBuf>,
    /// At most this many questions (0: all).
    #[arg(long, default_value_t = 0)]
    count: usize,
    /// Evaluate even when images are among the run's training images (recorded in the
    /// report).
    #[arg(long)]
    allow_overlap: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct T2iArgs {
    #[arg(long)]
    run: PathBuf,
    /// COCO captions annotation file: each image's first caption is its prompt.
    #[arg(long)]
    prompts: PathBuf,
    /// The evaluation images (FID's reference set).
    #[arg(long)]
    reference_images: PathBuf,
    /// pytorch-fid's Inception as ONNX; without it FID is not computed (the report says so).
    #[arg(long)]
    inception: Option<PathBuf>,
    #[arg(long)]
    out: PathBuf,
    /// Settings file (TOML or JSON, the fields of the protocol); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    count: Option<usize>,
    #[arg(long)]
    samples: Option<usize>,
    #[arg(long)]
    cd_share: Option<f64>,
    #[arg(long)]
    cfg: Option<f32>,
    /// The plausibility constraint on the CFG samples, as `cm3 generate --min-p` [default: 0.1].
    #[arg(long)]
    min_p: Option<f64>,
    /// Keep every prompt's first sample instead of re-ranking by CLIP.
    #[arg(long)]
    no_rerank: bool,
    #[arg(long)]
    retrieve: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long)]
    allow_overlap: bool,
    #[arg(long, default_value_t = 0)]
    threads: usize,
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct I2tArgs {
    #[arg(long)]
    run: PathBuf,
    /// A folder of images, or a COCO file whose `images` name them (in --image-dir).
    #[arg(long)]
    images: PathBuf,
    #[arg(long)]
    image_dir: Option<PathBuf>,
    #[arg(long)]
    references: PathBuf,
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 0)]
    count: usize,
    #[arg(long, default_value_t = 32)]
    max_tokens: usize,
    #[arg(long)]
    allow_overlap: bool,
    #[arg(long)]
    json: bool,
}

fn print_json(v: &serde_json::Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn t2i_config(a: &T2iArgs) -> Result<t2i::T2iConfig> {
    let mut c: t2i::T2iConfig = match &a.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            if path.extension().is_some_and(|x| x == "json") {
                serde_json::from_str(&text).with_context(|| format!("{}", path.display()))?
            } else {
                toml::from_str(&text).with_context(|| format!("{}", path.display()))?
            }
        }
        None => t2i::T2iConfig::default(),
    };
    if let Some(v) = a.count {
        c.count = v;
    }
    if let Some(v) = a.samples {
        c.samples = v;
    }
    if let Some(v) = a.cd_share {
        c.cd_share = v;
    }
    if let Some(v) = a.cfg {
        c.cfg_scale = v;
    }
    if let Some(v) = a.min_p {
        c.min_p = v;
    }
    if a.no_rerank {
        c.rerank = false;
    }
    if let Some(v) = a.retrieve {
        c.retrieve = v;
    }
    if let Some(v) = a.seed {
        c.seed = v;
    }
    Ok(c)
}

pub(crate) fn run(command: EvalCommand) -> Result<()> {
    match command {
        EvalCommand::Captions {
            predictions,
            references,
            json,
            per_image,
        } => {
            let scores = cm3_eval::captions::evaluate_files(&predictions, &references)?;
            if json {
                let mut v = scores.to_json();
                if per_image {
                    v["per_image"] = scores.per_image_json();
                }
                print_json(&v)?;
            } else {
                print!("{}", scores.table());
            }
        }
        EvalCommand::Vqa(a) => vqa(*a)?,
        EvalCommand::Fid {
            inception,
            dir_a,
            dir_b,
            batch,
            threads,
            json,
        } => {
            if batch == 0 || batch > 1024 {
                bail!("--batch must be in 1..=1024");
            }
            let r = cm3_eval::fid::fid_of_dirs(&inception, &dir_a, &dir_b, batch, threads)?;
            if json {
                print_json(&r.to_json())?;
            } else {
                print!("{}", r.table());
            }
        }
        EvalCommand::T2i(a) => {
            let o = t2i::T2iOptions {
                run: a.run.clone(),
                prompts: a.prompts.clone(),
                reference_images: a.reference_images.clone(),
                inception: a.inception.clone(),
                out: a.out.clone(),
                config: t2i_config(&a)?,
                allow_overlap: a.allow_overlap,
                threads: a.threads,
            };
            let r = t2i::run(&o)?;
            if a.json {
                print_json(&serde_json::to_value(&r)?)?;
            } else {
                println!(
                    "t2i: {} prompts ({} generated now); FID {}; CLIP score {:.4}; report {}",
                    r.prompts,
                    r.generated_now,
                    r.fid
                        .map_or("not computed (no --inception)".into(), |f| format!(
                            "{f:.4}"
                        )),
                    r.clip_score,
                    r.report.display()
                );
            }
        }
        EvalCommand::I2t(a) => {
            let o = i2t::I2tOptions {
                run: a.run,
                images: a.images,
                image_dir: a.image_dir,
                references: a.references,
                out: a.out.clone(),
                config: i2t::I2tConfig {
                    count: a.count,
                    max_tokens: a.max_tokens,
                    ..Default::default()
                },
                allow_overlap: a.allow_overlap,
            };
            let r = i2t::run(&o)?;
            if a.json {
                print_json(&serde_json::to_value(&r)?)?;
            } else {
                println!(
                    "i2t: {} images ({} captioned now); predictions {}",
                    r.images,
                    r.captioned_now,
                    r.predictions.display()
                );
                print!("{}", r.table);
            }
        }
    }
    Ok(())
}

fn vqa(a: VqaArgs) -> Result<()> {
    if let Some(run) = a.run {
        let (Some(questions), Some(images), Some(out)) = (a.questions, a.images, a.out) else {
            bail!("--run needs --questions, --images and --out");
        };
        let r = vqa_protocol::run(&vqa_protocol::VqaOptions {
            run,
            questions,
            annotations: a.annotations,
            images,
            out,
            config: vqa_protocol::VqaConfig {
                count: a.count,
                ..Default::default()
            },
            allow_overlap: a.allow_overlap,
        })?;
        if a.json {
            print_json(&serde_json::to_value(&r)?)?;
        } else {
            println!(
                "vqa: {} questions ({} answered now); predictions {}",
                r.questions,
                r.answered_now,
                r.predictions.display()
            );
            print!("{}", r.table);
        }
        return Ok(());
    }
    let predictions = a
        .predictions
        .context("--predictions <results.json> (or --run to answer the questions first)")?;
    let scores =
        cm3_eval::vqa::evaluate_files(&a.annotations, &predictions, a.questions.as_deref())?;
    if a.json {
        print_json(&scores.to_json())?;
    } else {
        print!("{}", scores.table());
    }
    Ok(())
}
