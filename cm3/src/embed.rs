//! `cm3 embed ...` tools.
use std::fmt::Write as _;

use anyhow::{Context, Result};
use cm3_core::fsio::write_atomic;
use cm3_embed::ClipTokenizer;
use cm3_embed::npy;
use cm3_embed::preprocess::{CLIP_SIZE, preprocess_bytes};

use crate::EmbedCommand;

pub fn run(command: EmbedCommand) -> Result<()> {
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
        EmbedCommand::Preprocess { images, out } => {
            let mut data = Vec::with_capacity(images.len() * 3 * (CLIP_SIZE * CLIP_SIZE) as usize);
            for path in &images {
                let bytes =
                    std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                let t = preprocess_bytes(&bytes, CLIP_SIZE)
                    .with_context(|| format!("{}", path.display()))?;
                data.extend_from_slice(&t);
            }
            let s = CLIP_SIZE as usize;
            let file = npy::encode_f32(&[images.len(), 3, s, s], &data);
            write_atomic(&out, &file, "preprocess")?;
            eprintln!(
                "preprocess: {} image(s) written to {}",
                images.len(),
                out.display()
            );
        }
    }
    Ok(())
}
