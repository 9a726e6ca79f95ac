//! `cm3 generate --run <run> <task>`: text → image, image → text and text infilling with a
//! trained run, with the paper's decoding methods.
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::json;

use std::path::Path;

use cm3_core::fsio::write_atomic;
use cm3_generate::{
    ClipScorer, GUIDED_MIN_P, Generator, Guidance, ImageInput, Retrieved, Retriever, Sampling,
    Settings,
};
use cm3_tokenize::ImageTokenizer;
use cm3_tokenize::image::{load_image, save_png};

#[derive(Args, Debug)]
pub(crate) struct GenerateArgs {
    #[command(subcommand)]
    pub task: Task,
    /// The run to generate with (its latest checkpoint and its dataset's tokenizers).
    #[arg(long, global = true)]
    pub run: Option<PathBuf>,
    /// flex (CPU), wgpu or cuda (builds with those features), as `cm3 train --backend`.
    #[arg(long, value_enum, default_value = "flex", global = true)]
    pub backend: crate::train::BackendArg,
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
    /// Only tokens whose conditional probability is at least this fraction of the most likely
    /// one's (0: off). With guidance the conditional stream decides what is plausible and
    /// guidance ranks within it (contrastive decoding's plausibility constraint, on eq. 2)
    /// [default: 0.1 with CFG or edit guidance, 0 otherwise].
    #[arg(long, global = true)]
    pub min_p: Option<f64>,
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

/// Each code grid decoded to `out/sample-NN.png`: the images, and their records for
/// generation.json.
fn write_images(
    out: &Path,
    tok: &ImageTokenizer,
    codes: &[Vec<u32>],
) -> Result<(Vec<Vec<u8>>, Vec<serde_json::Value>)> {
    let flat: Vec<u32> = codes.iter().flatten().copied().collect();
    let images = tok.decode_rgb(&flat, codes.len())?;
    let mut records = Vec::new();
    for (i, rgb) in images.iter().enumerate() {
        let name = format!("sample-{i:02}.png");
        save_png(&out.join(&name), rgb, tok.resolution())?;
        println!("{}", out.join(&name).display());
        records.push(json!({ "file": name, "codes": codes[i] }));
    }
    Ok((images, records))
}

#[derive(Subcommand, Debug)]
pub(crate) enum Task {
    /// Text → image: PNGs of the generated image tokens.
    T2i {
        #[arg(long)]
        prompt: String,
        /// Re-rank the samples by CLIP similarity to the prompt (the dataset's CLIP encoders)
        /// and write the best as best.png.
        #[arg(long)]
        rerank: bool,
        /// Put this many documents retrieved from the run's dataset in front of the prompt.
        #[arg(long, default_value_t = 0)]
        retrieve: usize,
        /// Share of the samples decoded with CD-K (--cd-alpha/--cd-k, defaults 0.1 and 5), the
        /// rest with CFG and top-p: the paper finds the two complementary before re-ranking.
        #[arg(long)]
        cd_share: Option<f64>,
    },
    /// Image → text (captioning through the CM3 infill form).
    I2t {
        #[arg(long)]
        image: PathBuf,
        #[arg(long, default_value_t = 64)]
        max_tokens: usize,
    },
    /// Image editing in Table 5's InstructPix2Pix template with text and image guidance (three
    /// streams; needs a model fine-tuned on such edits: `cm3 sft build --task instructpix2pix`).
    Edit {
        #[arg(long)]
        image: PathBuf,
        #[arg(long)]
        instruction: String,
        /// Text guidance scale (the paper's editing uses 7.5).
        #[arg(long, default_value_t = 7.5)]
        text_cfg: f32,
        /// Image guidance scale (the paper's editing uses 1.5).
        #[arg(long, default_value_t = 1.5)]
        image_cfg: f32,
    },
    /// Image-conditioned generation in Table 5's X-to-image template (CFG 3 on the caption, as
    /// §4.1): the feature image given, or for `--kind edge` the Canny edges of --image.
    Control {
        /// edge, seg, hed, pose, depth, norm or scribble.
        #[arg(long, default_value = "edge")]
        kind: String,
        #[arg(long)]
        caption: String,
        /// The feature image (edge map, segmentation, ...).
        #[arg(long, conflicts_with = "image", required_unless_present = "image")]
        feature_image: Option<PathBuf>,
        /// A picture whose Canny edges (OpenCV's, ControlNet's thresholds) are the feature
        /// (`--kind edge` only).
        #[arg(long)]
        image: Option<PathBuf>,
    },
    /// Spatially grounded generation in Table 5's detection template: `Generate high quality
    /// image of {caption} with segmentations {obj} at {loc}, ...` (CFG 3).
    Grounded {
        #[arg(long)]
        caption: String,
        /// `name at x0,y0,x1,y1; ...`, boxes in the pixels of the square image.
        #[arg(long)]
        objects: String,
    },
    /// Image infilling: regenerate a box of the image's code grid given its caption.
    InfillImage {
        #[arg(long)]
        image: PathBuf,
        #[arg(long, default_value = "")]
        caption: String,
        /// x0,y0,x1,y1 in codes of the grid, half-open (e.g. 0,0,16,4 on a 32 × 32 grid).
        #[arg(long, value_delimiter = ',', required = true)]
        r#box: Vec<usize>,
    },
    /// Visual question answering in Table 5's first VQA template, the answer infilled:
    /// `Question: {question} Answer: <mask>. <break> image` (what SFT on VQA teaches, and the
    /// zero-shot form).
    Vqa {
        #[arg(long)]
        image: PathBuf,
        #[arg(long)]
        question: String,
        #[arg(long, default_value_t = 8)]
        max_tokens: usize,
    },
    /// Captioning in Table 5's SFT captioning template, the caption infilled:
    /// `Describe the given picture. <mask> <break> image`.
    Caption {
        #[arg(long)]
        image: PathBuf,
        #[arg(long, default_value_t = 64)]
        max_tokens: usize,
    },
    /// Text infilling: the text holds exactly one `<mask>`, the marker of where the span goes
    /// (the model is given the span sentinel `<mask:0>` there), optionally with the document's
    /// image.
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
    // The image tasks guided by their text at CFG 3 by default (§4.1 and the t2i results).
    let t2i = matches!(
        a.task,
        Task::T2i { .. } | Task::Control { .. } | Task::Grounded { .. }
    );
    let guidance = match (&a.task, a.cd_alpha, a.cd_k) {
        (
            Task::Edit {
                text_cfg,
                image_cfg,
                ..
            },
            None,
            None,
        ) => Guidance::Edit {
            text_scale: *text_cfg,
            image_scale: *image_cfg,
        },
        (_, cd_alpha, cd_k) => match (cd_alpha, cd_k) {
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
        },
    };
    let settings = Settings {
        samples: a.samples,
        guidance,
        sampling: Sampling {
            temperature: a.temperature,
            top_k: a.top_k,
            top_p: a.top_p,
            min_p: a.min_p.unwrap_or(guidance.min_p(GUIDED_MIN_P)),
        },
        seed: a.seed,
    };
    if let Err(e) = settings.sampling.check() {
        bail!("--{e}");
    }
    // The SFT tasks are text infilling in a Table 5 template, the output field the `<mask>`.
    let task_prompt = match &a.task {
        Task::Vqa {
            image,
            question,
            max_tokens,
        } => Some((
            "vqa",
            sft_prompt(cm3_sft::Task::Vqa2, &[("question", question.as_str())])?,
            image.clone(),
            *max_tokens,
        )),
        Task::Caption { image, max_tokens } => Some((
            "caption",
            sft_prompt(cm3_sft::Task::Coco, &[])?,
            image.clone(),
            *max_tokens,
        )),
        _ => None,
    };
    let device = cm3_train::Backend::from(a.backend).device()?;
    let g = Generator::open(&run, a.image_tokenizer.as_deref(), &device)?;
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let started = std::time::Instant::now();
    let (task, input, outputs) = match &a.task {
        Task::Vqa { .. } | Task::Caption { .. } => {
            let Some((name, text, image, max_tokens)) = &task_prompt else {
                bail!("internal: no prompt for the task");
            };
            let tok = g.image.as_ref().context("no image tokenizer")?;
            let rgb = load_image(image, tok.resolution())
                .with_context(|| format!("reading {}", image.display()))?;
            let spans = g.infill_text(text, Some(&rgb), *max_tokens, &settings)?;
            for s in &spans {
                println!("{}", s.trim());
            }
            (
                *name,
                json!({ "prompt": text, "image": image }),
                spans.into_iter().map(|s| json!({ "text": s })).collect(),
            )
        }
        Task::T2i {
            prompt,
            rerank,
            retrieve: k,
            cd_share,
        } => {
            let tok = g.image.as_ref().context("no image tokenizer")?;
            let Retrieved {
                tokens: context,
                docs: retrieved,
            } = if *k > 0 {
                Retriever::open(&g.dataset, &g.layout, 0)?.retrieve(prompt, *k)?
            } else {
                Retrieved::default()
            };
            // Samples [0, n_cd) by CD-K, the rest by the guidance chosen above.
            let n_cd = match cd_share {
                Some(f) if (0.0..=1.0).contains(f) => (f * a.samples as f64).round() as usize,
                Some(f) => bail!("--cd-share must be in [0, 1], got {f}"),
                None => 0,
            };
            let mut codes = Vec::new();
            let mut methods = Vec::new();
            if n_cd > 0 {
                let guidance = Guidance::CdK {
                    cd_alpha: a.cd_alpha.unwrap_or(0.1),
                    cd_k: a.cd_k.unwrap_or(5).max(1),
                };
                let cd = Settings {
                    samples: n_cd,
                    guidance,
                    sampling: Sampling {
                        min_p: a.min_p.unwrap_or(guidance.min_p(GUIDED_MIN_P)),
                        ..settings.sampling
                    },
                    seed: settings.seed ^ 0xC0DE,
                };
                codes.extend(g.text_to_image(prompt, &context, &cd)?);
                methods.extend(std::iter::repeat_n(cd.guidance, n_cd));
            }
            if n_cd < a.samples {
                let rest = Settings {
                    samples: a.samples - n_cd,
                    ..settings.clone()
                };
                codes.extend(g.text_to_image(prompt, &context, &rest)?);
                methods.extend(std::iter::repeat_n(rest.guidance, a.samples - n_cd));
            }
            let (images, mut files) = write_images(&out, tok, &codes)?;
            let scores = if *rerank {
                let side = tok.resolution();
                let inputs: Vec<ImageInput<'_>> = images
                    .iter()
                    .map(|px| ImageInput::Rgb {
                        pixels: px,
                        width: side,
                        height: side,
                    })
                    .collect();
                Some(ClipScorer::for_dataset(&g.dataset, 0)?.similarities(prompt, &inputs)?)
            } else {
                None
            };
            for (i, f) in files.iter_mut().enumerate() {
                f["guidance"] = json!(methods[i]);
                f["clip_score"] = json!(scores.as_ref().map(|s| s[i]));
            }
            if let Some(scores) = &scores {
                let best = (0..scores.len())
                    .max_by(|&x, &y| scores[x].total_cmp(&scores[y]))
                    .context("no samples")?;
                let path = out.join("best.png");
                save_png(&path, &images[best], tok.resolution())?;
                println!(
                    "{} (sample {best}, CLIP score {:.4})",
                    path.display(),
                    scores[best]
                );
            }
            let retrieved: Vec<_> = retrieved
                .iter()
                .map(|(id, score)| json!({ "id": format!("{id:016x}"), "score": score }))
                .collect();
            (
                "t2i",
                json!({ "prompt": prompt, "retrieved": retrieved, "rerank": rerank }),
                files,
            )
        }
        Task::Edit {
            image, instruction, ..
        } => {
            let tok = g.image.as_ref().context("no image tokenizer")?;
            let rgb = load_image(image, tok.resolution())
                .with_context(|| format!("reading {}", image.display()))?;
            let codes = g.edit_image(&rgb, instruction, &settings)?;
            let (_, files) = write_images(&out, tok, &codes)?;
            (
                "edit",
                json!({ "image": image, "instruction": instruction }),
                files,
            )
        }
        Task::Control {
            kind,
            caption,
            feature_image,
            image,
        } => {
            let task: cm3_sft::Task = kind.parse()?;
            let tok = g.image.as_ref().context("no image tokenizer")?;
            let side = tok.resolution();
            let feature = match (feature_image, image) {
                (Some(f), _) => {
                    load_image(f, side).with_context(|| format!("reading {}", f.display()))?
                }
                (None, Some(i)) if task == cm3_sft::Task::Edge => {
                    let rgb =
                        load_image(i, side).with_context(|| format!("reading {}", i.display()))?;
                    cm3_sft::canny::edge_map_rgb(&rgb, side as usize)
                }
                (None, _) => bail!(
                    "--kind {kind}: give --feature-image (cm3 computes only edge maps, from --image)"
                ),
            };
            let codes = g.controlled_image(task, &feature, caption, &settings)?;
            let (_, files) = write_images(&out, tok, &codes)?;
            (
                "control",
                json!({ "kind": kind, "caption": caption, "feature_image": feature_image, "image": image }),
                files,
            )
        }
        Task::Grounded { caption, objects } => {
            let tok = g.image.as_ref().context("no image tokenizer")?;
            let parsed = parse_objects(objects)?;
            let codes = g.grounded_image(caption, &parsed, &settings)?;
            let (_, files) = write_images(&out, tok, &codes)?;
            (
                "grounded",
                json!({ "caption": caption, "objects": parsed }),
                files,
            )
        }
        Task::InfillImage {
            image,
            caption,
            r#box,
        } => {
            let tok = g.image.as_ref().context("no image tokenizer")?;
            let rgb = load_image(image, tok.resolution())
                .with_context(|| format!("reading {}", image.display()))?;
            let bbox: [usize; 4] = r#box
                .as_slice()
                .try_into()
                .context("--box takes four numbers: x0,y0,x1,y1")?;
            let grids = g.infill_image(&rgb, caption, bbox, &settings)?;
            let (_, files) = write_images(&out, tok, &grids)?;
            (
                "infill-image",
                json!({ "image": image, "caption": caption, "box": bbox }),
                files,
            )
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

/// The text document of a Table 5 template with its output field as `<mask>`: VQA's first
/// ("Question: {question} Answer: {answer}.", the one `cm3 eval vqa` asks) and COCO's second
/// ("Describe the given picture. {caption}", the one with an instruction).
fn sft_prompt(task: cm3_sft::Task, fields: &[(&str, &str)]) -> Result<String> {
    let (template, output) = match task {
        cm3_sft::Task::Vqa2 => (0, "answer"),
        _ => (1, "caption"),
    };
    let mut ex = cm3_sft::Example::new().image(cm3_sft::ImageSlot::Image);
    for (k, v) in fields {
        ex = ex.field(*k, *v);
    }
    ex = ex.field(output, cm3_core::vocab::MASK);
    let r = cm3_sft::render(task, template, &ex)?;
    match r.segments.first() {
        Some(cm3_sft::Rendered::Text(t)) => Ok(t.clone()),
        _ => bail!("internal: the {task} template does not start with text"),
    }
}

/// `name at x0,y0,x1,y1; name at ...` as (name, location) pairs.
fn parse_objects(spec: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for part in spec.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((name, loc)) = part.rsplit_once(" at ") else {
            bail!("--objects: {part:?} is not `name at x0,y0,x1,y1`");
        };
        let nums: Vec<&str> = loc.split(',').map(str::trim).collect();
        if nums.len() != 4 || nums.iter().any(|n| n.parse::<u32>().is_err()) {
            bail!("--objects: {loc:?} is not four whole numbers x0,y0,x1,y1");
        }
        out.push((name.trim().to_string(), nums.join(",")));
    }
    if out.is_empty() {
        bail!("--objects: no object given");
    }
    Ok(out)
}
