//! The tasks of `cm3 generate` on a trained run: text → image, image → text (captioning through
//! the CM3 infill form), text and image infilling, and editing. The prompts are built by
//! [`crate::prompts`] in the training format; no stream holds `<mask>`.
use std::path::{Path, PathBuf};

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use cm3_core::vocab::{self, VocabLayout};
use cm3_model::decoder::{Cm3Decoder, DecoderConfig};
use cm3_tokenize::{ImageTokenizer, TextTokenizer};
use cm3_train::run::{RUN_CONFIG, RunRecord, latest_checkpoint};

use crate::decode::{Guidance, Request, Target, generate};
use crate::error::{GenerateError, Result};
use crate::prompts::{self, Prompts, Specials};
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
            None => cm3_tokenize::image::layout_image_tokenizer(dataset, &layout),
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

    fn specials(&self) -> Result<Specials> {
        Specials::from_layout(&self.layout)
    }

    /// The image's codes as ids of the layout.
    fn image_ids(&self, tok: &ImageTokenizer, rgb: &[u8]) -> Result<Vec<u32>> {
        let codes = tok
            .encode_rgb(&[rgb])?
            .pop()
            .ok_or_else(|| bad("the image tokenizer returned no codes"))?;
        Ok(codes
            .iter()
            .map(|&c| c + self.layout.image.offset)
            .collect())
    }

    /// Image ids (whole images) as 0-based codes.
    fn codes(&self, samples: Vec<Vec<u32>>) -> Vec<Vec<u32>> {
        let offset = self.layout.image.offset;
        samples
            .into_iter()
            .map(|c| c.into_iter().map(|t| t - offset).collect())
            .collect()
    }

    /// A target of `count` image ids.
    fn image_target(&self, count: usize) -> Target {
        let offset = self.layout.image.offset as usize;
        Target::Fixed {
            count,
            allowed: offset..offset + self.layout.image.codes as usize,
        }
    }

    fn image_tokenizer(&self, task: &str) -> Result<&ImageTokenizer> {
        self.image.as_ref().ok_or_else(|| {
            bad(format!(
                "{task} needs the dataset's VQ image tokenizer, which was not found: pass \
                 --image-tokenizer"
            ))
        })
    }

    /// Every sample from the same prompts (the image-only stream only when editing).
    fn run(&self, p: Prompts, target: Target, s: &Settings) -> Result<Vec<Vec<u32>>> {
        let conds = vec![p.cond; s.samples];
        let unconds = vec![p.uncond; s.samples];
        let image_only = if p.image_only.is_empty() {
            Vec::new()
        } else {
            vec![p.image_only; s.samples]
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

    /// Text → image: `context <eos> text <break>` then exactly grid² image codes; the
    /// unconditional stream masks the caption as training does, `context <eos> <mask:0>
    /// <break>` ([`prompts::text_to_image`]). `context` (retrieved documents, in the training
    /// format) goes in front of both. Returns each sample's codes (0-based).
    pub fn text_to_image(
        &self,
        prompt: &str,
        context: &[u32],
        s: &Settings,
    ) -> Result<Vec<Vec<u32>>> {
        let tok = self.image_tokenizer("text-to-image")?;
        let text = self.text.encode(prompt)?;
        let p = prompts::text_to_image(&self.specials()?, context, &text)?;
        let per = (tok.grid() * tok.grid()) as usize;
        let out = self.run(p, self.image_target(per), s)?;
        Ok(self.codes(out))
    }

    /// Generated text spans, decoded.
    fn texts(&self, out: &[Vec<u32>]) -> Result<Vec<String>> {
        out.iter()
            .map(|ids| Ok(self.text.decode(ids)?.trim().to_string()))
            .collect()
    }

    /// Image → text through the CM3 infill form: `<eos> <mask:0> <break> image <infill>
    /// <mask:0>`, then the caption until the span ends (at `<eos>`, the scored end of a training
    /// example). With guidance, the unconditional stream is `<eos>`, the caption prior
    /// ([`prompts::image_to_text`] says why).
    pub fn image_to_text(
        &self,
        rgb: &[u8],
        max_tokens: usize,
        s: &Settings,
    ) -> Result<Vec<String>> {
        let tok = self.image_tokenizer("image-to-text")?;
        let image = self.image_ids(tok, rgb)?;
        let p = prompts::image_to_text(&self.specials()?, &image)?;
        let out = self.run(p, prompts::text_target(&self.layout, max_tokens)?, s)?;
        self.texts(&out)
    }

    /// Text infilling: `text` holds one `<mask>`, the marker users type where the span goes (the
    /// model never sees it); the document is `<eos> before <mask:0> after [<break> image]
    /// <infill> <mask:0>` and the span is generated until it ends (at `<eos>`). No guidance.
    pub fn infill_text(
        &self,
        text: &str,
        rgb: Option<&[u8]>,
        max_tokens: usize,
        s: &Settings,
    ) -> Result<Vec<String>> {
        let (before, after) = prompts::split_at_mask(text)?;
        let image = match rgb {
            Some(rgb) => {
                Some(self.image_ids(self.image_tokenizer("infilling with an image")?, rgb)?)
            }
            None => None,
        };
        let p = prompts::infill_text(
            &self.specials()?,
            &self.text.encode(before.trim_end())?,
            &self.text.encode(after)?,
            image.as_deref(),
        )?;
        let s = Settings {
            guidance: Guidance::None,
            ..s.clone()
        };
        let out = self.run(p, prompts::text_target(&self.layout, max_tokens)?, &s)?;
        self.texts(&out)
    }
}

impl Generator {
    /// Image infilling by a box of the code grid (`x0..x1` × `y0..y1`, half-open, in codes): the
    /// box's rows become CM3 spans (`<mask:0>` …, one per sentinel), the document
    /// `<eos> caption <break> image-with-spans <infill>` is followed by each span regenerated
    /// after its sentinel. With guidance, the unconditional stream has the caption masked as
    /// `<mask:0>` and the rows renumbered after it ([`prompts::infill_image`]). Returns each
    /// sample's full code grid (0-based), the box filled in.
    pub fn infill_image(
        &self,
        rgb: &[u8],
        caption: &str,
        bbox: [usize; 4],
        s: &Settings,
    ) -> Result<Vec<Vec<u32>>> {
        let tok = self.image_tokenizer("image infilling")?;
        let g = tok.grid() as usize;
        let image = self.image_ids(tok, rgb)?;
        let caption = self.text.encode(caption)?;
        let p = prompts::infill_image(&self.specials()?, &caption, &image, g, bbox)?;
        let [x0, y0, x1, y1] = bbox;
        let offset = self.layout.image.offset as usize;
        let target = Target::Spans {
            lengths: vec![x1 - x0; y1 - y0],
            separators: p.separators,
            uncond_separators: p.uncond_separators,
            allowed: offset..offset + self.layout.image.codes as usize,
        };
        let spans = self.run(p.prompts, target, s)?;
        let mut grids = self.codes(vec![image; spans.len()]);
        for (grid, generated) in grids.iter_mut().zip(spans) {
            for (k, t) in generated.into_iter().enumerate() {
                let (row, col) = (k / (x1 - x0), k % (x1 - x0));
                grid[(y0 + row) * g + x0 + col] = t - offset as u32;
            }
        }
        Ok(grids)
    }

    /// The text documents of a Table 5 template (the image documents left out), with `fields`
    /// filled and, where `masked` names a field, that field empty.
    fn template_texts(task: cm3_sft::Task, fields: &[(&str, &str)]) -> Result<Vec<String>> {
        let mut ex = cm3_sft::Example::new();
        for slot in task.images() {
            ex = ex.image(slot);
        }
        for (k, v) in fields {
            ex = ex.field(*k, *v);
        }
        let r = cm3_sft::render(task, 0, &ex).map_err(|e| bad(e.to_string()))?;
        Ok(r.segments
            .into_iter()
            .filter_map(|s| match s {
                cm3_sft::Rendered::Text(t) => Some(t),
                cm3_sft::Rendered::Image(_) => None,
            })
            .collect())
    }

    /// Image editing in Table 5's InstructPix2Pix template with §4.1's two guidance scales
    /// ([`prompts::edit_image`]): text guidance from the instruction, image guidance from the
    /// source, combined as `uncond + image_scale·(image − uncond) + text_scale·(full − image)`
    /// when `s.guidance` is [`Guidance::Edit`]. Needs a model fine-tuned on such edits
    /// (`cm3 sft build --task instructpix2pix=...`). Returns each sample's codes (0-based).
    pub fn edit_image(&self, rgb: &[u8], instruction: &str, s: &Settings) -> Result<Vec<Vec<u32>>> {
        let tok = self.image_tokenizer("image editing")?;
        let image = self.image_ids(tok, rgb)?;
        // The instruction is tokenised on its own, as `cm3 sft build` tokenises a field.
        let texts =
            Self::template_texts(cm3_sft::Task::InstructPix2Pix, &[("edit_instruction", "")])?;
        let prefix = self.text.encode(texts.first().map_or("", String::as_str))?;
        let mut p = prompts::edit_image(
            &self.specials()?,
            &prefix,
            &self.text.encode(instruction)?,
            &image,
        )?;
        if !matches!(s.guidance, Guidance::Edit { .. }) {
            p.image_only.clear();
        }
        let out = self.run(p, self.image_target(image.len()), s)?;
        Ok(self.codes(out))
    }

    /// Image-conditioned generation in Table 5's X-to-image template of `task` (edge, seg, hed,
    /// pose, depth, norm, scribble) from the feature image (`feature_rgb`, at the tokenizer's
    /// resolution) and the caption, with one guidance scale ([`prompts::controlled_image`]).
    pub fn controlled_image(
        &self,
        task: cm3_sft::Task,
        feature_rgb: &[u8],
        caption: &str,
        s: &Settings,
    ) -> Result<Vec<Vec<u32>>> {
        let tok = self.image_tokenizer("image-conditioned generation")?;
        let feature = self.image_ids(tok, feature_rgb)?;
        let texts = Self::template_texts(task, &[("caption", "")])?;
        if texts.len() != 2 {
            return Err(bad(format!(
                "{task} is not an image-conditioned generation task (edge, seg, hed, pose, \
                 depth, norm, scribble)"
            )));
        }
        let prefix = self.text.encode(&texts[0])?;
        let p = prompts::controlled_image(
            &self.specials()?,
            &prefix,
            &feature,
            &self.text.encode(caption)?,
        )?;
        let out = self.run(p, self.image_target(feature.len()), s)?;
        Ok(self.codes(out))
    }

    /// Spatially grounded generation in Table 5's detection template, `Generate high quality
    /// image of {caption} with segmentations {obj} at {loc}, ...`, then the image: text → image
    /// with that text ([`Self::text_to_image`], its unconditional stream the text masked whole).
    pub fn grounded_image(
        &self,
        caption: &str,
        objects: &[(String, String)],
        s: &Settings,
    ) -> Result<Vec<Vec<u32>>> {
        let objects = cm3_sft::objects_text(objects);
        let texts = Self::template_texts(
            cm3_sft::Task::Detection,
            &[("caption", caption), ("objects", &objects)],
        )?;
        self.text_to_image(texts.first().map_or("", String::as_str), &[], s)
    }
}
