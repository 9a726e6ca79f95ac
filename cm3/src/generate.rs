//! `cm3 generate --run <run> <task>`: text → image, image → text and text infilling with a
//! trained run, with the paper's decoding methods.
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use clap::{Args, Subcommand};
use serde_json::json;

use cm3_core::fsio::write_atomic;
use cm3_generate::{Generator, Guidance, Sampling, Settings};
use cm3_tokenize::image::{load_image, save_png};

#[derive(Args, Debug)]
pub(crate) struct GenerateArgs {
    #[command(subcommand)]
    pub task: Task,
    /// The run to generate with (its latest checkpoint and its dataset's tokenizers).
    #[arg(long, global = true)]
    pub run: Option<PathBuf>,
    /// Where to write the outputs and generation.json.
    #[arg(long, global = true)]
    pub out: Option<PathBuf>,
    /// Samples per prompt.
    #[arg(long, global = true, default_value_t = 1)]
    pub samples: usize,
    /// Softmax temperature (0: greedy).
    #[arg(long, global = true, default_value_t = 1.0)]
    pub temperature: f64,
    /// Nucleus sampling: the smallest set of tokens reaching this probability (1: off).
    #[arg(long, global = true, default_value_t = 1.0)]
    pub top_p: f64,
    /// Only the k most likely tokens (0: off).
    #[arg(long, global = true, default_value_t = 0)]
    pub top_k: usize,
    /// Classifier-free guidance scale α_c (eq. 2; 1: the conditional stream alone)
    /// [default: 3.0 for t2i, 1 otherwise].
    #[arg(long, global = true)]
    pub cfg: Option<f32>,
    /// Contrastive decoding CD-K (eq. 3) instead of CFG: the plausibility factor α.
    #[arg(long, global = true)]
    pub cd_alpha: Option<f64>,
    /// CD-K: the rank k whose probability sets the plausible set [default: 5 with --cd-alpha].
    #[arg(long, global = true)]
    pub cd_k: Option<usize>,
    #[arg(long, global = true, default_value_t = 0)]
    pub seed: u64,
    /// The VQ image tokenizer, when not the dataset's.
    #[arg(long, global = true)]
    pub image_tokenizer: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Task {
    /// Text → image: PNGs of the generated image tokens.
    T2i {
        #[arg(long)]
        prompt: String,
    },
    /// Image → text (captioning through the CM3 infill form).
    I2t {
        #[arg(long)]
        image: PathBuf,
        #[arg(long, default_value_t = 64)]
        max_tokens: usize,
    },
    /// Text infilling: the text holds one `<mask>` where the span goes, optionally with the
    /// document's image.
    Infill {
        #[arg(long)]
        text: String,
        #[arg(long)]
        image: Option<PathBuf>,
        #[arg(long, default_value_t = 32)]
        max_tokens: usize,
    },
}

pub(crate) fn run(a: GenerateArgs) -> Result<()> {
    let run = a.run.clone().context("--run <run directory> is required")?;
    let out = a.out.clone().context("--out <directory> is required")?;
    if a.samples == 0 {
        bail!("--samples must be at least 1");
    }
    if !(a.top_p > 0.0 && a.top_p <= 1.0) {
        bail!("--top-p must be in (0, 1], got {}", a.top_p);
    }
    let t2i = matches!(a.task, Task::T2i { .. });
    let guidance = match (a.cd_alpha, a.cd_k) {
        (Some(alpha), k) => {
            if !(alpha > 0.0 && alpha <= 1.0) {
                bail!("--cd-alpha must be in (0, 1], got {alpha}");
            }
            Guidance::CdK {
                cd_alpha: alpha,
                cd_k: k.unwrap_or(5).max(1),
            }
        }
        (None, Some(_)) => bail!("--cd-k needs --cd-alpha"),
        (None, None) => match a.cfg.unwrap_or(if t2i { 3.0 } else { 1.0 }) {
            1.0 => Guidance::None,
            s => Guidance::Cfg { cfg_scale: s },
        },
    };
    let settings = Settings {
        samples: a.samples,
        guidance,
        sampling: Sampling {
            temperature: a.temperature,
            top_k: a.top_k,
            top_p: a.top_p,
        },
        seed: a.seed,
    };
    let device = Device::flex();
    let g = Generator::open(&run, a.image_tokenizer.as_deref(), &device)?;
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let started = std::time::Instant::now();
    let (task, input, outputs) = match &a.task {
        Task::T2i { prompt } => {
            let tok = g.image.as_ref().context("no image tokenizer")?;
            let codes = g.text_to_image(prompt, &[], &settings)?;
            let flat: Vec<u32> = codes.iter().flatten().copied().collect();
            let images = tok.decode_rgb(&flat, codes.len())?;
            let mut files = Vec::new();
            for (i, rgb) in images.iter().enumerate() {
                let path = out.join(format!("sample-{i:02}.png"));
                save_png(&path, rgb, tok.resolution())?;
                files.push(json!({ "file": path.file_name().map(|n| n.to_string_lossy().into_owned()), "codes": codes[i] }));
                println!("{}", path.display());
            }
            ("t2i", json!({ "prompt": prompt }), files)
        }
        Task::I2t { image, max_tokens } => {
            let tok = g.image.as_ref().context("no image tokenizer")?;
            let rgb = load_image(image, tok.resolution())
                .with_context(|| format!("reading {}", image.display()))?;
            let texts = g.image_to_text(&rgb, *max_tokens, &settings)?;
            for t in &texts {
                println!("{t}");
            }
            (
                "i2t",
                json!({ "image": image }),
                texts.into_iter().map(|t| json!({ "text": t })).collect(),
            )
        }
        Task::Infill {
            text,
            image,
            max_tokens,
        } => {
            let rgb = match image {
                Some(p) => {
                    let tok = g.image.as_ref().context("no image tokenizer")?;
                    Some(
                        load_image(p, tok.resolution())
                            .with_context(|| format!("reading {}", p.display()))?,
                    )
                }
                None => None,
            };
            let spans = g.infill_text(text, rgb.as_deref(), *max_tokens, &settings)?;
            for s in &spans {
                println!("{}", text.replacen(cm3_core::vocab::MASK, s, 1));
            }
            (
                "infill",
                json!({ "text": text, "image": image }),
                spans.into_iter().map(|s| json!({ "span": s })).collect(),
            )
        }
    };
    let record = json!({
        "task": task,
        "input": input,
        "run": run,
        "checkpoint": g.checkpoint,
        "settings": settings,
        "seeds": settings.seeds(),
        "outputs": outputs,
        "seconds": started.elapsed().as_secs_f64(),
        "tool_version": env!("CARGO_PKG_VERSION"),
    });
    write_atomic(
        &out.join("generation.json"),
        (serde_json::to_string_pretty(&record)? + "\n").as_bytes(),
        "generate",
    )?;
    eprintln!(
        "generate: {} {task} sample(s) in {:.1} s; settings in {}",
        settings.samples,
        started.elapsed().as_secs_f64(),
        out.join("generation.json").display()
    );
    Ok(())
}
