//! The prompts of the tasks, built from the layout's special tokens and token lists alone (no
//! model, no tokenizer), so that every stream is tested against the training format.
//!
//! Training (`cm3 pack`) writes a document as `<eos> text <break> image` and an example as its
//! retrieved documents then the query's; CM3 spans are replaced by the sentinels `<mask:i>`
//! (numbered in position order), repeated after `<infill>`, and the example ends with a scored
//! `<eos>`. A masked caption is therefore `<mask:k>`, k the spans before it. The special `<mask>`
//! is in no training sequence: a stream holding it would condition on a token the model never
//! saw, so no prompt holds it ([`Prompts`] refuses it) and it lives on only as the marker users
//! type where a text span goes ([`split_at_mask`]).
use std::ops::Range;

use cm3_core::vocab::{self, VocabLayout};

use crate::decode::Target;
use crate::error::{GenerateError, Result};

fn bad(reason: impl Into<String>) -> GenerateError {
    GenerateError::Invalid(reason.into())
}

/// The special tokens prompts are made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Specials {
    pub eos: u32,
    pub brk: u32,
    pub infill: u32,
    /// `<mask>`: known only so that a prompt holding it is refused.
    pub mask: u32,
    /// `<mask:0>`, `<mask:1>`, ...
    pub sentinels: Vec<u32>,
}

impl Specials {
    pub fn from_layout(layout: &VocabLayout) -> Result<Self> {
        let sentinels = layout.sentinels();
        if sentinels.is_empty() {
            return Err(bad("the vocabulary has no <mask:0> sentinel"));
        }
        Ok(Self {
            eos: layout.special(vocab::EOS)?,
            brk: layout.special(vocab::BREAK)?,
            infill: layout.special(vocab::INFILL)?,
            mask: layout.special(vocab::MASK)?,
            sentinels,
        })
    }

    /// Sentinel `i`; `what` says why it is needed when the vocabulary has too few.
    fn sentinel(&self, i: usize, what: &str) -> Result<u32> {
        self.sentinels.get(i).copied().ok_or_else(|| {
            bad(format!(
                "{what} needs sentinel <mask:{i}>; the vocabulary has {} sentinels",
                self.sentinels.len()
            ))
        })
    }
}

/// The streams of one generation. Every row is a prefix of a form training writes (up to the
/// exceptions the task functions name), and none holds `<mask>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prompts {
    /// Conditioned on everything given.
    pub cond: Vec<u32>,
    /// The unconditional stream of CFG and CD-K (eq. 1's T(t_y | `<mask>`)); empty when the task
    /// has none.
    pub uncond: Vec<u32>,
    /// Editing only: the instruction masked, the source image kept; empty otherwise.
    pub image_only: Vec<u32>,
}

impl Prompts {
    fn checked(self, sp: &Specials) -> Result<Self> {
        for (name, row) in [
            ("conditional", &self.cond),
            ("unconditional", &self.uncond),
            ("image-only", &self.image_only),
        ] {
            if row.contains(&sp.mask) {
                return Err(bad(format!(
                    "the {name} prompt holds {}, which no training sequence holds",
                    vocab::MASK
                )));
            }
        }
        Ok(self)
    }
}

/// A caption, or the masked one when it is empty (no training document has an empty caption).
fn caption_or(text: &[u32], masked: u32) -> Vec<u32> {
    if text.is_empty() {
        vec![masked]
    } else {
        text.to_vec()
    }
}

/// Text → image. cond: `context <eos> text <break>`; uncond: `context <eos> <mask:k> <break>`,
/// the query's caption masked whole as training masks it (k: the sentinels in `context`, 0 for
/// the unmasked retrieved documents `cm3 generate --retrieve` gives). Every training example
/// whose query caption is masked whole starts so, so T(image | masked caption) is trained.
pub fn text_to_image(sp: &Specials, context: &[u32], text: &[u32]) -> Result<Prompts> {
    if context.contains(&sp.infill) {
        // After <infill> come spans, never a document: no example continues so.
        return Err(bad(
            "the context holds <infill>; give whole documents, without a span tail",
        ));
    }
    let k = context.iter().filter(|t| sp.sentinels.contains(t)).count();
    let masked = sp.sentinel(k, "the masked caption after the context")?;
    let doc = |caption: &[u32]| [context, &[sp.eos], caption, &[sp.brk]].concat();
    Prompts {
        cond: doc(&caption_or(text, masked)),
        uncond: doc(&[masked]),
        image_only: Vec::new(),
    }
    .checked(sp)
}

/// Image → text through the CM3 infill form (the paper's "Image of `<mask>`: [image]
/// `<infill>`"). cond: `<eos> <mask:0> <break> image <infill> <mask:0>`, the training example of a
/// pair whose caption is masked whole, up to the caption, which then ends at the example's scored
/// `<eos>`.
///
/// uncond: `<eos>` alone, the caption with nothing before it: the start of a text-first document
/// whose caption holds no span (`<eos> caption <break> image`, as most training documents are),
/// so T(caption) is the trained caption prior, and the tokens sampled after it keep the stream
/// a training prefix. A mirror
/// of cond with the image masked (`<eos> <mask:0> <break> <mask:1> <infill> <mask:0>`) would need
/// a whole image masked as one span, which training does not promise (whole-segment masks are
/// drawn for captions), and image-first documents (`<eos> image <break> caption`) are not written
/// by default. This stream's caption ends at `<break>` where cond's ends at `<eos>`: both stop a
/// span, so guidance only moves weight between two ways of stopping.
pub fn image_to_text(sp: &Specials, image: &[u32]) -> Result<Prompts> {
    let s0 = sp.sentinel(0, "image → text")?;
    Prompts {
        cond: [&[sp.eos, s0, sp.brk], image, &[sp.infill, s0]].concat(),
        uncond: vec![sp.eos],
        image_only: Vec::new(),
    }
    .checked(sp)
}

/// Where the span goes in infill text: around its one `<mask>` (the marker users type; the model
/// sees `<mask:0>` there).
pub fn split_at_mask(text: &str) -> Result<(&str, &str)> {
    let Some((before, after)) = text.split_once(vocab::MASK) else {
        return Err(bad(format!(
            "the text has no {} where the span goes",
            vocab::MASK
        )));
    };
    if after.contains(vocab::MASK) {
        return Err(bad(format!(
            "the text has more than one {}; infilling generates one span",
            vocab::MASK
        )));
    }
    Ok((before, after))
}

/// Text infilling: `<eos> before <mask:0> after [<break> image] <infill> <mask:0>`, the training
/// example of a pair with that span of its caption masked, up to the span, which then ends at
/// the scored `<eos>`. One stream: the text around the span is the condition. (Without an image
/// the `<infill>` follows the caption, which training never shows: documents have images.)
pub fn infill_text(
    sp: &Specials,
    before: &[u32],
    after: &[u32],
    image: Option<&[u32]>,
) -> Result<Prompts> {
    let s0 = sp.sentinel(0, "text infilling")?;
    let mut cond = [&[sp.eos], before, &[s0], after].concat();
    if let Some(image) = image {
        cond.push(sp.brk);
        cond.extend_from_slice(image);
    }
    cond.extend([sp.infill, s0]);
    Prompts {
        cond,
        ..Prompts::default()
    }
    .checked(sp)
}

/// Image infilling's streams and the separators forced between the regenerated rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanPrompts {
    pub prompts: Prompts,
    /// Forced in the conditional stream before rows 1, 2, ... of the box.
    pub separators: Vec<u32>,
    /// Forced in the unconditional stream (its sentinels follow the masked caption's).
    pub uncond_separators: Vec<u32>,
}

/// The image (`grid`² ids) with each row of `bbox` replaced by sentinel `first + i`, and the
/// sentinels used.
fn box_spans(
    sp: &Specials,
    image: &[u32],
    grid: usize,
    bbox: [usize; 4],
    first: usize,
) -> Result<(Vec<u32>, Vec<u32>)> {
    let [x0, y0, x1, y1] = bbox;
    let rows: Vec<u32> = (0..y1 - y0)
        .map(|i| {
            sp.sentinel(
                first + i,
                &format!("a box {} rows high (one span per row)", y1 - y0),
            )
        })
        .collect::<Result<_>>()?;
    let mut out = Vec::with_capacity(image.len());
    for y in 0..grid {
        for x in 0..grid {
            if (y0..y1).contains(&y) && (x0..x1).contains(&x) {
                if x == x0 {
                    out.push(rows[y - y0]);
                }
            } else {
                out.push(image[y * grid + x]);
            }
        }
    }
    Ok((out, rows))
}

/// Image infilling by a box of the code grid (`x0, y0, x1, y1`, half-open, in codes; `image`
/// holds `grid`² ids). Each row of the box is a CM3 span.
///
/// cond: `<eos> caption <break> image(box row i → <mask:i>) <infill> <mask:0>`, then row 0,
/// `<mask:1>`, row 1, ...: exactly the training example with those spans masked.
///
/// uncond: the caption masked whole as `<mask:0>` and the rows renumbered after it:
/// `<eos> <mask:0> <break> image(box row i → <mask:i+1>) <infill> <mask:1>`, then row 0,
/// `<mask:2>`, .... Through `<infill>` it is the training example with the caption and the rows
/// masked. Its tail skips the caption's span (`<mask:0> caption`), which training puts first
/// (spans follow position order and the caption precedes the image), so `<infill> <mask:1>` is
/// the one step training never shows: the price of a stream that never sees the caption (a tail
/// holding the caption would condition the rows on it; image-first documents, whose caption span
/// would follow the rows, are not written by default). An empty caption is the masked one in both
/// streams.
pub fn infill_image(
    sp: &Specials,
    caption: &[u32],
    image: &[u32],
    grid: usize,
    bbox: [usize; 4],
) -> Result<SpanPrompts> {
    let [x0, y0, x1, y1] = bbox;
    if !(x0 < x1 && y0 < y1 && x1 <= grid && y1 <= grid) {
        return Err(bad(format!(
            "box {x0},{y0},{x1},{y1} is not inside the {grid} × {grid} code grid (x0,y0,x1,y1, \
             half-open)"
        )));
    }
    if image.len() != grid * grid {
        return Err(bad(format!(
            "an image of {} codes, not {grid} × {grid}",
            image.len()
        )));
    }
    let masked = sp.sentinel(0, "the masked caption")?;
    let (body, rows) = box_spans(sp, image, grid, bbox, 0)?;
    let (masked_body, masked_rows) = box_spans(sp, image, grid, bbox, 1)?;
    let uncond = [
        &[sp.eos, masked, sp.brk],
        &masked_body[..],
        &[sp.infill, masked_rows[0]],
    ]
    .concat();
    let uncond_separators = masked_rows[1..].to_vec();
    let (cond, separators) = if caption.is_empty() {
        (uncond.clone(), uncond_separators.clone())
    } else {
        let cond = [
            &[sp.eos],
            caption,
            &[sp.brk],
            &body[..],
            &[sp.infill, rows[0]],
        ]
        .concat();
        (cond, rows[1..].to_vec())
    };
    Ok(SpanPrompts {
        prompts: Prompts {
            cond,
            uncond,
            image_only: Vec::new(),
        }
        .checked(sp)?,
        separators,
        uncond_separators,
    })
}

/// `<eos>`, the documents separated by `<break>`, and a closing `<break>`: an image follows.
fn documents(sp: &Specials, docs: &[&[u32]]) -> Vec<u32> {
    let mut out = vec![sp.eos];
    for d in docs {
        out.extend_from_slice(d);
        out.push(sp.brk);
    }
    out
}

/// Image editing in Table 5's InstructPix2Pix template, `Edit first image following the
/// instruction <br> {source} <br> {instruction} <br> {edited}`, with §4.1's two guidance
/// scales. Streams: full, `<eos> P <break> source <break> instruction <break>`; image only, the
/// instruction masked whole as `<mask:0>` (SFT's CM3 masking masks text documents whole);
/// neither, `<eos> <mask:0> <break>`, the unconditional image of every pretraining example whose
/// caption is masked whole (masking the source too would need a whole image masked as one span,
/// which neither stage's masking promises). An empty instruction is the masked one.
pub fn edit_image(
    sp: &Specials,
    prefix: &[u32],
    instruction: &[u32],
    image: &[u32],
) -> Result<Prompts> {
    let masked = sp.sentinel(0, "the masked instruction")?;
    Prompts {
        cond: documents(sp, &[prefix, image, &caption_or(instruction, masked)]),
        uncond: vec![sp.eos, masked, sp.brk],
        image_only: documents(sp, &[prefix, image, &[masked]]),
    }
    .checked(sp)
}

/// Image-conditioned generation in Table 5's X-to-image template, `Make high quality image
/// from ... <br> {feature image} <br> {caption} <br> {image}`, with one guidance scale (§4.1):
/// cond the whole template, uncond the caption masked whole, `<eos> P <break> feature <break>
/// <mask:0> <break>`, so guidance pushes towards the caption, the feature image held in both.
pub fn controlled_image(
    sp: &Specials,
    prefix: &[u32],
    feature: &[u32],
    caption: &[u32],
) -> Result<Prompts> {
    let masked = sp.sentinel(0, "the masked caption")?;
    Prompts {
        cond: documents(sp, &[prefix, feature, &caption_or(caption, masked)]),
        uncond: documents(sp, &[prefix, feature, &[masked]]),
        image_only: Vec::new(),
    }
    .checked(sp)
}

/// A generated text span: ordinary text ids until anything that ends a span in the training
/// format: `<eos>` (the scored end of an example, so of its last span), a sentinel (the next
/// span), `<break>`, `<infill>` or `<pad>`; the stop itself is not returned. `<mask>`, like every
/// special, is neither allowed nor a stop, so it is never produced.
pub fn text_target(layout: &VocabLayout, max: usize) -> Result<Target> {
    let mut stop = vec![
        layout.special(vocab::EOS)?,
        layout.special(vocab::PAD)?,
        layout.special(vocab::BREAK)?,
        layout.special(vocab::INFILL)?,
    ];
    stop.extend(layout.sentinels());
    let mut specials: Vec<u32> = layout.text.specials.values().copied().collect();
    specials.sort_unstable();
    // Ordinary text ids: below the image offset and not special.
    let mut allowed: Vec<Range<usize>> = Vec::new();
    let mut start = 0usize;
    for s in specials {
        if s as usize > start {
            allowed.push(start..s as usize);
        }
        start = s as usize + 1;
    }
    allowed.push(start..layout.image.offset as usize);
    Ok(Target::UntilStop { max, allowed, stop })
}

#[cfg(test)]
mod tests;
