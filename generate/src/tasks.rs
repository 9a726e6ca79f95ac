//! The tasks of `cm3 generate` on a trained run: text → image, image → text (captioning through
//! the CM3 infill form), and text infilling; the prompts are built in the training format.
use std::path::{Path, PathBuf};

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use cm3_core::vocab::{self, VocabLayout};
use cm3_model::decoder::{Cm3Decoder, DecoderConfig};
use cm3_tokenize::{ImageTokenizer, TextTokenizer};
use cm3_train::run::{RUN_CONFIG, RunRecord, latest_checkpoint};

use crate::decode::{Guidance, Request, Target, generate};
use crate::error::{GenerateError, Result};
use crate::sampling::Sampling;

/// A trained model with its dataset's vocabulary and tokenizers.
#[derive(Debug)]
pub struct Generator {
    pub model: Cm3Decoder,
    pub cfg: DecoderConfig,
    pub layout: VocabLayout,
    pub text: TextTokenizer,
    /// Needed for images (t2i output, i2t input).
    pub image: Option<ImageTokenizer>,
    pub checkpoint: PathBuf,
    /// The dataset the run was trained on.
    pub dataset: PathBuf,
    pub device: Device,
}

/// Settings shared by the tasks, recorded with every output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub samples: usize,
    pub guidance: Guidance,
    pub sampling: Sampling,
    pub seed: u64,
}

impl Settings {
    /// Sample i's seed.
    pub fn seeds(&self) -> Vec<u64> {
        (0..self.samples as u64)
            .map(|i| {
                self.seed
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    .wrapping_add(i)
            })
            .collect()
    }
}

fn bad(reason: impl Into<String>) -> GenerateError {
    GenerateError::Invalid(reason.into())
}

/// The image tokenizer the dataset's layout names (recorded relative to the dataset or absolute;
/// older layouts recorded it relative to where `cm3 tokenize` ran).
fn layout_image_tokenizer(dataset: &Path, layout: &VocabLayout) -> Option<PathBuf> {
    let recorded = PathBuf::from(&layout.image.tokenizer.path);
    let candidates = [
        recorded.clone(),
        dataset.join(&recorded),
        dataset.join("tokenizer/image"),
    ];
    for c in candidates {
        let dir = if c.file_name().is_some_and(|n| n == "model.safetensors") {
            c.parent().map(Path::to_path_buf).unwrap_or_default()
        } else {
            c
        };
        if dir.join("config.json").is_file() || dir.is_file() {
            return Some(dir);
        }
    }
    None
}

impl Generator {
    /// The latest checkpoint of `run` and the tokenizers of the dataset it was trained on.
    /// `image_tokenizer` overrides the dataset's.
    pub fn open(run: &Path, image_tokenizer: Option<&Path>, device: &Device) -> Result<Self> {
        let config = run.join(RUN_CONFIG);
        let text = std::fs::read_to_string(&config).map_err(|e| {
            bad(format!(
                "{}: not a cm3 run ({e}); train one with `cm3 train`",
                run.display()
            ))
        })?;
        let record: RunRecord = serde_json::from_str(&text)
            .map_err(|e| bad(format!("{}: not a cm3 run config: {e}", config.display())))?;
        let checkpoint = latest_checkpoint(run)?
            .ok_or_else(|| bad(format!("{}: the run has no checkpoint yet", run.display())))?;
        let (model, cfg) = Cm3Decoder::load_dir(&checkpoint, device)?;
        let dataset = &record.dataset;
        let layout = VocabLayout::load(&dataset.join(vocab::VOCAB))?;
        if layout.size as usize != cfg.vocab_size {
            return Err(bad(format!(
                "{}: a vocabulary of {} ids, the model's is {}",
                dataset.display(),
                layout.size,
                cfg.vocab_size
            )));
        }
        let text = TextTokenizer::load(&dataset.join(&layout.text.tokenizer.path))?;
        let image_path = match image_tokenizer {
            Some(p) => Some(p.to_path_buf()),
            None => layout_image_tokenizer(dataset, &layout),
        };
        let image = match image_path {
            Some(p) => {
                let tok = ImageTokenizer::open(&p, None, device)?;
                if tok.grid() != layout.image.grid {
                    return Err(bad(format!(
                        "{}: {} × {} codes per image, the dataset's are {} × {}",
                        p.display(),
                        tok.grid(),
                        tok.grid(),
                        layout.image.grid,
                        layout.image.grid
                    )));
                }
                Some(tok)
            }
            None => None,
        };
        Ok(Self {
            model,
            cfg,
            layout,
            text,
            image,
            checkpoint,
            dataset: dataset.clone(),
            device: device.clone(),
        })
    }

    fn special(&self, name: &str) -> Result<u32> {
        Ok(self.layout.special(name)?)
    }

    fn image_tokenizer(&self, task: &str) -> Result<&ImageTokenizer> {
        self.image.as_ref().ok_or_else(|| {
            bad(format!(
                "{task} needs the dataset's VQ image tokenizer, which was not found: pass \
                 --image-tokenizer"
            ))
        })
    }

    fn run(
        &self,
        cond: Vec<u32>,
        uncond: Vec<u32>,
        target: Target,
        s: &Settings,
    ) -> Result<Vec<Vec<u32>>> {
        self.run3(cond, uncond, Vec::new(), target, s)
    }

    /// Every sample from the same prompts (three streams when editing).
    fn run3(
        &self,
        cond: Vec<u32>,
        uncond: Vec<u32>,
        image_only: Vec<u32>,
        target: Target,
        s: &Settings,
    ) -> Result<Vec<Vec<u32>>> {
        let conds = vec![cond; s.samples];
        let unconds = vec![uncond; s.samples];
        let image_only = if image_only.is_empty() {
            Vec::new()
        } else {
            vec![image_only; s.samples]
        };
        generate(
            &self.model,
            &self.cfg,
            &Request {
                cond: &conds,
                uncond: &unconds,
                image_only: &image_only,
                target,
                guidance: s.guidance,
                sampling: s.sampling,
                seeds: &s.seeds(),
            },
            &self.device,
        )
    }

    /// Text → image: `<eos> text <break>` then exactly grid² image codes; the unconditional
    /// stream replaces the text by `<mask>` (§3.1). `context` (retrieved documents, already in
    /// the training format) goes in front of both. Returns each sample's codes (0-based).
    pub fn text_to_image(
        &self,
        prompt: &str,
        context: &[u32],
        s: &Settings,
    ) -> Result<Vec<Vec<u32>>> {
        let tok = self.image_tokenizer("text-to-image")?;
        let (eos, brk, mask) = (
            self.special(vocab::EOS)?,
            self.special(vocab::BREAK)?,
            self.special(vocab::MASK)?,
        );
        let text = self.text.encode(prompt)?;
        let cond: Vec<u32> = context
            .iter()
            .copied()
            .chain([eos])
            .chain(text)
            .chain([brk])
            .collect();
        let uncond: Vec<u32> = context.iter().copied().chain([eos, mask, brk]).collect();
        let per = (tok.grid() * tok.grid()) as usize;
        let offset = self.layout.image.offset as usize;
        let codes = self.run(
            cond,
            uncond,
            Target::Fixed {
                count: per,
                allowed: offset..offset + self.layout.image.codes as usize,
            },
            s,
        )?;
        Ok(codes
            .into_iter()
            .map(|c| c.into_iter().map(|t| t - offset as u32).collect())
            .collect())
    }

    /// Stop tokens of a generated text span: anything that ends a span in the training format.
    fn text_target(&self, max: usize) -> Result<Target> {
        let mut stop = vec![
            self.special(vocab::EOS)?,
            self.special(vocab::PAD)?,
            self.special(vocab::BREAK)?,
            self.special(vocab::INFILL)?,
        ];
        stop.extend(self.layout.sentinels());
        let specials: Vec<u32> = self.layout.text.specials.values().copied().collect();
        // Ordinary text ids: below the image offset and not special.
        let mut allowed = Vec::new();
        let mut start = 0usize;
        let mut sorted = specials;
        sorted.sort_unstable();
        for s in sorted {
            if s as usize > start {
                allowed.push(start..s as usize);
            }
            start = s as usize + 1;
        }
        allowed.push(start..self.layout.image.offset as usize);
        Ok(Target::UntilStop { max, allowed, stop })
    }

    /// Image → text through the CM3 infill form: `<eos> <mask:0> <break> image <infill>
    /// <mask:0>`, then the caption until the span ends. With guidance, the unconditional stream
    /// has the image replaced by `<mask>`.
    pub fn image_to_text(
        &self,
        rgb: &[u8],
        max_tokens: usize,
        s: &Settings,
    ) -> Result<Vec<String>> {
        let tok = self.image_tokenizer("image-to-text")?;
        let codes = tok
            .encode_rgb(&[rgb])?
            .pop()
            .ok_or_else(|| bad("the image tokenizer returned no codes"))?;
        let offset = self.layout.image.offset;
        let sentinel = *self
            .layout
            .sentinels()
            .first()
            .ok_or_else(|| bad("the vocabulary has no <mask:0> sentinel"))?;
        let (eos, brk, infill, mask) = (
            self.special(vocab::EOS)?,
            self.special(vocab::BREAK)?,
            self.special(vocab::INFILL)?,
            self.special(vocab::MASK)?,
        );
        let cond: Vec<u32> = [eos, sentinel, brk]
            .into_iter()
            .chain(codes.iter().map(|&c| c + offset))
            .chain([infill, sentinel])
            .collect();
        let uncond = vec![eos, sentinel, brk, mask, infill, sentinel];
        let out = self.run(cond, uncond, self.text_target(max_tokens)?, s)?;
        out.iter()
            .map(|ids| Ok(self.text.decode(ids)?.trim().to_string()))
            .collect()
    }

    /// Text infilling: `text` holds one `<mask>` where the span goes; the document is
    /// `<eos> before <mask:0> after [<break> image] <infill> <mask:0>` and the span is generated.
    pub fn infill_text(
        &self,
        text: &str,
        rgb: Option<&[u8]>,
        max_tokens: usize,
        s: &Settings,
    ) -> Result<Vec<String>> {
        let Some((before, after)) = text.split_once(vocab::MASK) else {
            return Err(bad(format!(
                "the text has no {} where the span goes",
                vocab::MASK
            )));
        };
        let sentinel = *self
            .layout
            .sentinels()
            .first()
            .ok_or_else(|| bad("the vocabulary has no <mask:0> sentinel"))?;
        let (eos, brk, infill) = (
            self.special(vocab::EOS)?,
            self.special(vocab::BREAK)?,
            self.special(vocab::INFILL)?,
        );
        let mut cond = vec![eos];
        cond.extend(self.text.encode(before.trim_end())?);
        cond.push(sentinel);
        cond.extend(self.text.encode(after)?);
        if let Some(rgb) = rgb {
            let tok = self.image_tokenizer("infilling with an image")?;
            let codes = tok
                .encode_rgb(&[rgb])?
                .pop()
                .ok_or_else(|| bad("the image tokenizer returned no codes"))?;
            cond.push(brk);
            cond.extend(codes.iter().map(|&c| c + self.layout.image.offset));
        }
        cond.extend([infill, sentinel]);
        let s = Settings {
            guidance: Guidance::None,
            ..s.clone()
        };
        let out = self.run(cond.clone(), cond, self.text_target(max_tokens)?, &s)?;
        out.iter()
            .map(|ids| Ok(self.text.decode(ids)?.trim().to_string()))
            .collect()
    }
}

impl Generator {
    /// Image infilling by a box of the code grid (`x0..x1` × `y0..y1`, half-open, in codes): the
    /// box's rows become CM3 spans (`<mask:0>` …, at most one per sentinel), the document
    /// `<eos> caption <break> image-with-spans <infill>` is followed by each span regenerated
    /// after its sentinel. With guidance, the unconditional stream has the caption replaced by
    /// `<mask>`. Returns each sample's full code grid (0-based), the box filled in.
    pub fn infill_image(
        &self,
        rgb: &[u8],
        caption: &str,
        bbox: [usize; 4],
        s: &Settings,
    ) -> Result<Vec<Vec<u32>>> {
        let tok = self.image_tokenizer("image infilling")?;
        let g = tok.grid() as usize;
        let [x0, y0, x1, y1] = bbox;
        let sentinels = self.layout.sentinels();
        if !(x0 < x1 && y0 < y1 && x1 <= g && y1 <= g) {
            return Err(bad(format!(
                "box {x0},{y0},{x1},{y1} is not inside the {g} × {g} code grid (x0,y0,x1,y1,                  half-open)"
            )));
        }
        if y1 - y0 > sentinels.len() {
            return Err(bad(format!(
                "a box {} rows high needs {} span sentinels; the vocabulary has {}",
                y1 - y0,
                y1 - y0,
                sentinels.len()
            )));
        }
        let codes = tok
            .encode_rgb(&[rgb])?
            .pop()
            .ok_or_else(|| bad("the image tokenizer returned no codes"))?;
        let offset = self.layout.image.offset;
        let (eos, brk, infill, mask) = (
            self.special(vocab::EOS)?,
            self.special(vocab::BREAK)?,
            self.special(vocab::INFILL)?,
            self.special(vocab::MASK)?,
        );
        // The image with each box row replaced by its sentinel.
        let mut image = Vec::with_capacity(codes.len());
        for y in 0..g {
            for x in 0..g {
                if (y0..y1).contains(&y) && (x0..x1).contains(&x) {
                    if x == x0 {
                        image.push(sentinels[y - y0]);
                    }
                } else {
                    image.push(codes[y * g + x] + offset);
                }
            }
        }
        let rows = y1 - y0;
        let tail = [infill, sentinels[0]];
        let cond: Vec<u32> = [eos]
            .into_iter()
            .chain(self.text.encode(caption)?)
            .chain([brk])
            .chain(image.iter().copied())
            .chain(tail)
            .collect();
        let uncond: Vec<u32> = [eos, mask, brk]
            .into_iter()
            .chain(image.iter().copied())
            .chain(tail)
            .collect();
        let target = Target::Spans {
            lengths: vec![x1 - x0; rows],
            separators: sentinels[1..rows].to_vec(),
            allowed: offset as usize..(offset + self.layout.image.codes) as usize,
        };
        let spans = self.run(cond, uncond, target, s)?;
        Ok(spans
            .into_iter()
            .map(|generated| {
                let mut grid = codes.clone();
                for (k, &t) in generated.iter().enumerate() {
                    let (row, col) = (k / (x1 - x0), k % (x1 - x0));
                    grid[(y0 + row) * g + x0 + col] = t - offset;
                }
                grid
            })
            .collect())
    }
}

impl Generator {
    /// Image editing (§4's instruction-guided editing, with its two guidance scales): the
    /// document `<eos> instruction <break> source image <break>` followed by the edited image.
    /// This template is cm3's (the paper does not print one) and needs a model fine-tuned on
    /// edits in it; a base model continues it as an image conditioned on both. Streams: full,
    /// image only (instruction → `<mask>`) and neither (image codes → one `<mask>` too), combined
    /// as `uncond + image_scale·(image − uncond) + text_scale·(full − image)` when
    /// `s.guidance` is [`Guidance::Edit`]. Returns each sample's codes (0-based).
    pub fn edit_image(&self, rgb: &[u8], instruction: &str, s: &Settings) -> Result<Vec<Vec<u32>>> {
        let tok = self.image_tokenizer("image editing")?;
        let codes = tok
            .encode_rgb(&[rgb])?
            .pop()
            .ok_or_else(|| bad("the image tokenizer returned no codes"))?;
        let offset = self.layout.image.offset;
        let (eos, brk, mask) = (
            self.special(vocab::EOS)?,
            self.special(vocab::BREAK)?,
            self.special(vocab::MASK)?,
        );
        let image: Vec<u32> = codes.iter().map(|&c| c + offset).collect();
        let full: Vec<u32> = [eos]
            .into_iter()
            .chain(self.text.encode(instruction)?)
            .chain([brk])
            .chain(image.iter().copied())
            .chain([brk])
            .collect();
        let image_only: Vec<u32> = [eos, mask, brk]
            .into_iter()
            .chain(image.iter().copied())
            .chain([brk])
            .collect();
        let uncond = vec![eos, mask, brk, mask, brk];
        let per = codes.len();
        let target = Target::Fixed {
            count: per,
            allowed: offset as usize..(offset + self.layout.image.codes) as usize,
        };
        let out = match s.guidance {
            Guidance::Edit { .. } => self.run3(full, uncond, image_only, target, s)?,
            _ => self.run(full, uncond, target, s)?,
        };
        Ok(out
            .into_iter()
            .map(|c| c.into_iter().map(|t| t - offset).collect())
            .collect())
    }
}
