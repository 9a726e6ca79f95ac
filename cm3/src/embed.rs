//! `cm3 embed ...` tools.
use std::fmt::Write as _;

use anyhow::{Context, Result, bail};
use cm3_core::WorkerSpec;
use cm3_core::fsio::write_atomic;
use cm3_embed::ClipTokenizer;
use cm3_embed::hub::Hub;
use cm3_embed::npy;
use cm3_embed::onnx::{EMBED_DIM, TextEncoder, VisionEncoder, normalize_rows};
use cm3_embed::preprocess::{CLIP_SIZE, preprocess_bytes};
use cm3_embed::stage::{EmbedFileConfig, EmbedOptions};
use rayon::prelude::*;

use crate::{EmbedArgs, EmbedCommand};

pub fn run(args: EmbedArgs) -> Result<()> {
    let Some(command) = args.command else {
        let Some(dataset) = args.dataset else {
            bail!(
                "give a dataset (`cm3 embed <dataset>`) or a subcommand (see `cm3 embed --help`)"
            );
        };
        let hub = Hub::from_env();
        let mut file: EmbedFileConfig = crate::load_config(args.config.as_deref())?;
        file.image_model = args.image_model.unwrap_or(file.image_model);
        file.text_model = args.text_model.unwrap_or(file.text_model);
        let opts = EmbedOptions {
            dataset,
            image_model: hub.resolve(&file.image_model)?,
            text_model: hub.resolve(&file.text_model)?,
            batch_size: args.batch_size.unwrap_or(file.batch_size),
            session_threads: args.session_threads.unwrap_or(file.session_threads),
            preprocess_threads: args.preprocess_threads.unwrap_or(file.preprocess_threads),
            worker: WorkerSpec::new(args.workers.num_workers, args.workers.worker_index)?,
            rebuild: args.rebuild,
        };
        let r = cm3_embed::stage::run(&opts)?;
        eprintln!(
            "embed: {} rows and {} rejects in {} shard(s) ({} skipped); {} captions longer than 77 tokens were cut; \
             {:.2} s after loading the models ({:.2} rows/s)",
            r.rows,
            r.rejects,
            r.shards_written,
            r.shards_skipped,
            r.captions_truncated,
            r.seconds,
            r.rows as f64 / r.seconds.max(1e-9)
        );
        return Ok(());
    };
    match command {
        EmbedCommand::Tokenize { input, out } => {
            let text =
                std::fs::read(&input).with_context(|| format!("reading {}", input.display()))?;
            let text = String::from_utf8_lossy(&text);
            let tok = ClipTokenizer::openai();
            let (mut rows, mut truncated) = (0usize, 0usize);
            let mut buf = String::new();
            for line in text.lines() {
                let (ids, cut) = tok.tokenize_77(line);
                truncated += usize::from(cut);
                rows += 1;
                let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
                let _ = writeln!(buf, "[{}]", ids.join(","));
            }
            write_atomic(&out, buf.as_bytes(), "tokenize")?;
            eprintln!(
                "tokenize: {rows} rows written to {} ({truncated} longer than 77 tokens, cut with the end token kept)",
                out.display()
            );
        }
        EmbedCommand::Text {
            text,
            text_model,
            out,
        } => {
            let mut enc = TextEncoder::load(&Hub::from_env().resolve(&text_model)?, 0)?;
            let (ids, cut) = ClipTokenizer::openai().tokenize_77(&text);
            if cut {
                eprintln!("embed: the text is longer than 77 CLIP tokens; it was cut");
            }
            let mut v = enc.embed(&ids, 1)?;
            normalize_rows(&mut v, EMBED_DIM);
            emit_vector(&v, out.as_deref())?;
        }
        EmbedCommand::Image {
            image,
            image_model,
            out,
        } => {
            let mut enc = VisionEncoder::load(&Hub::from_env().resolve(&image_model)?, 0)?;
            let bytes =
                std::fs::read(&image).with_context(|| format!("reading {}", image.display()))?;
            let px = preprocess_bytes(&bytes, CLIP_SIZE)
                .with_context(|| format!("{}", image.display()))?;
            let mut v = enc.embed(px, 1)?;
            normalize_rows(&mut v, EMBED_DIM);
            emit_vector(&v, out.as_deref())?;
        }
        EmbedCommand::Preprocess { images, out } => {
            // Files are read and decoded in parallel (rayon: all cores), results kept in order.
            let start = std::time::Instant::now();
            let tensors: Vec<Vec<f32>> = images
                .par_iter()
                .map(|path| {
                    let bytes = std::fs::read(path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    preprocess_bytes(&bytes, CLIP_SIZE)
                        .with_context(|| format!("{}", path.display()))
                })
                .collect::<Result<_>>()?;
            let secs = start.elapsed().as_secs_f64();
            match out {
                Some(out) => {
                    let s = CLIP_SIZE as usize;
                    let file = npy::encode_f32(&[images.len(), 3, s, s], &tensors.concat());
                    write_atomic(&out, &file, "preprocess")?;
                    eprintln!(
                        "preprocess: {} image(s) written to {}",
                        images.len(),
                        out.display()
                    );
                }
                None => eprintln!(
                    "preprocess: {} image(s) in {secs:.3} s ({:.1} images/s, {} threads)",
                    images.len(),
                    images.len() as f64 / secs,
                    rayon::current_num_threads()
                ),
            }
        }
    }
    Ok(())
}

/// Print one vector as a JSON array, or save it as a [1, dim] float32 .npy.
fn emit_vector(v: &[f32], out: Option<&std::path::Path>) -> Result<()> {
    match out {
        Some(path) => {
            write_atomic(path, &npy::encode_f32(&[1, v.len()], v), "embed")?;
            eprintln!("embed: {} values written to {}", v.len(), path.display());
        }
        None => println!("{}", serde_json::to_string(v)?),
    }
    Ok(())
}
