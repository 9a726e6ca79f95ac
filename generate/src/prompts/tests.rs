//! Every stream against the training example `cm3 pack` writes for the same pair: built by
//! `cm3_pack::masking::apply` with the spans a task stands for, followed by the scored `<eos>`.
//! A stream that held `<mask>` (in no training sequence) could not be a prefix of one.
use std::ops::Range;

use cm3_core::vocab::{self, TextVocab, TokenizerRef, VocabLayout};
use cm3_pack::example::Doc;
use cm3_pack::masking::{self, segments};

use super::*;

fn tokenizer(path: &str) -> TokenizerRef {
    TokenizerRef {
        path: path.into(),
        sha256: "00".into(),
    }
}

/// The standard specials (`<mask>` 3, sentinels `<mask:0>` 5 ... `<mask:7>` 12), 300 text ids,
/// a 4 × 4 grid of 64 codes.
fn layout() -> VocabLayout {
    let text = TextVocab {
        size: 300,
        specials: vocab::special_tokens(8).into_iter().zip(0..).collect(),
        tokenizer: tokenizer("text.json"),
    };
    VocabLayout::new(text, 64, 4, tokenizer("image.safetensors")).expect("layout")
}

struct Fixture {
    sp: Specials,
    pack: masking::Specials,
    text: Vec<u32>,
    image: Vec<u32>,
}

fn fixture() -> Fixture {
    let l = layout();
    Fixture {
        sp: Specials::from_layout(&l).expect("specials"),
        pack: masking::Specials::from_layout(&l).expect("pack specials"),
        text: vec![40, 41, 42, 43],
        image: (0..16).map(|c| l.image.offset + (c * 7) % 64).collect(),
    }
}

impl Fixture {
    /// A text-first document, as training writes it.
    fn doc(&self, text: &[u32], image: &[u32]) -> Vec<u32> {
        Doc { text, image }.tokens(false, &self.pack)
    }

    /// What training sees for `example` with `spans` masked: the CM3 form and its scored end.
    fn trained(&self, example: &[u32], spans: &[Range<usize>]) -> Vec<u32> {
        let mut out = masking::apply(example, spans, &self.pack);
        out.push(self.pack.eos);
        out
    }

    /// Training masks at least one span per example, so a document with none is seen as a
    /// retrieved one: `doc` followed by a query whose caption is masked whole.
    fn unmasked(&self, doc: &[u32]) -> Vec<u32> {
        let ex = [doc, &self.doc(&[70, 71], &self.image[..])].concat();
        self.trained(&ex, &[self.query_caption(&ex)])
    }

    /// The query caption's span: the last document's first segment.
    fn query_caption(&self, example: &[u32]) -> Range<usize> {
        let segs = segments(example, &self.pack);
        segs[segs.len() - 2].clone()
    }
}

#[track_caller]
fn assert_prefix(row: &[u32], of: &[u32], what: &str) {
    assert!(
        of.starts_with(row),
        "{what}: {row:?} is not a prefix of the training sequence {of:?}"
    );
}

#[track_caller]
fn assert_no_mask(p: &Prompts, sp: &Specials) {
    for row in [&p.cond, &p.uncond, &p.image_only] {
        assert!(!row.contains(&sp.mask), "{row:?} holds <mask>");
    }
}

#[test]
fn the_specials_are_the_layouts() {
    let f = fixture();
    assert_eq!((f.sp.eos, f.sp.brk, f.sp.mask, f.sp.infill), (1, 2, 3, 4));
    assert_eq!(f.sp.sentinels, (5..13).collect::<Vec<u32>>());
}

#[test]
fn text_to_image_masks_the_caption_as_training_does() {
    let f = fixture();
    let ex = f.doc(&f.text, &f.image);
    let p = text_to_image(&f.sp, &[], &f.text).expect("prompts");
    assert_no_mask(&p, &f.sp);
    assert_eq!(p.uncond, vec![f.sp.eos, f.sp.sentinels[0], f.sp.brk]);
    // The unconditional stream and the image it draws: the example with its caption masked whole.
    let whole = f.trained(&ex, &[f.query_caption(&ex)]);
    assert_prefix(&[&p.uncond[..], &f.image].concat(), &whole, "uncond");
    assert_prefix(&[&p.cond[..], &f.image].concat(), &f.unmasked(&ex), "cond");
    // An empty prompt is the masked caption (no document has an empty one).
    let empty = text_to_image(&f.sp, &[], &[]).expect("prompts");
    assert_eq!(empty.cond, empty.uncond);
}

#[test]
fn text_to_image_numbers_the_masked_caption_after_the_contexts_spans() {
    let f = fixture();
    let (t1, t2) = (vec![50, 51], vec![60, 61, 62]);
    let (i1, i2): (Vec<u32>, Vec<u32>) = (
        f.image.iter().rev().copied().collect(),
        f.image.iter().map(|&c| c + 1).collect(),
    );
    let context = [f.doc(&t1, &i1), f.doc(&t2, &i2)].concat();
    let ex = [&context[..], &f.doc(&f.text, &f.image)].concat();
    let caption = f.query_caption(&ex);
    assert_eq!(caption.start, context.len() + 1);
    // Unmasked retrieved documents (`--retrieve`): the caption is <mask:0>.
    let p = text_to_image(&f.sp, &context, &f.text).expect("prompts");
    assert_no_mask(&p, &f.sp);
    let whole = f.trained(&ex, std::slice::from_ref(&caption));
    assert_prefix(&[&p.uncond[..], &f.image].concat(), &whole, "uncond");
    assert_prefix(&p.cond, &f.unmasked(&ex), "cond");
    // A context whose first image holds a span: the caption is <mask:1>.
    let spans = [5..8, caption];
    let trained = f.trained(&ex, &spans);
    let masked_context = &trained[..context.len() - 3 + 1];
    assert_eq!(masked_context.last(), Some(&i2[i2.len() - 1]));
    let p = text_to_image(&f.sp, masked_context, &f.text).expect("prompts");
    assert!(p.uncond.ends_with(&[f.sp.eos, f.sp.sentinels[1], f.sp.brk]));
    assert_prefix(&[&p.uncond[..], &f.image].concat(), &trained, "uncond");
    // A context with a span tail is no example's beginning.
    assert!(text_to_image(&f.sp, &trained, &f.text).is_err());
}

#[test]
fn image_to_text_streams_are_training_prefixes() {
    let f = fixture();
    let ex = f.doc(&f.text, &f.image);
    let p = image_to_text(&f.sp, &f.image).expect("prompts");
    assert_no_mask(&p, &f.sp);
    // The caption follows the prompt and ends at the example's scored <eos>, exactly.
    let whole = f.trained(&ex, &[f.query_caption(&ex)]);
    assert_eq!([&p.cond[..], &f.text, &[f.sp.eos]].concat(), whole);
    // The unconditional stream reads a caption at the start of an unmasked document.
    assert_eq!(p.uncond, vec![f.sp.eos]);
    let plain = f.unmasked(&ex);
    assert_prefix(
        &[&p.uncond[..], &f.text, &[f.sp.brk]].concat(),
        &plain,
        "uncond",
    );
}

#[test]
fn text_infilling_is_the_training_example_with_a_caption_span() {
    let f = fixture();
    let ex = f.doc(&f.text, &f.image);
    let (before, span, after) = (&f.text[..1], &f.text[1..3], &f.text[3..]);
    let p = infill_text(&f.sp, before, after, Some(&f.image)).expect("prompts");
    assert_no_mask(&p, &f.sp);
    assert!(p.uncond.is_empty() && p.image_only.is_empty());
    assert_eq!(
        [&p.cond[..], span, &[f.sp.eos]].concat(),
        f.trained(&ex, std::slice::from_ref(&(2..4)))
    );
    assert_eq!(
        split_at_mask("a <mask> on a bench").ok(),
        Some(("a ", " on a bench"))
    );
    assert!(split_at_mask("a dog on a bench").is_err());
    assert!(split_at_mask("a <mask> on a <mask>").is_err());
}

#[test]
fn image_infilling_streams_follow_the_training_spans() {
    let f = fixture();
    let ex = f.doc(&f.text, &f.image);
    let start = f.text.len() + 2; // the image's first code
    let bbox = [1, 1, 3, 3];
    let rows: Vec<Range<usize>> = (1..3)
        .map(|y| start + y * 4 + 1..start + y * 4 + 3)
        .collect();
    let s = infill_image(&f.sp, &f.text, &f.image, 4, bbox).expect("prompts");
    assert_no_mask(&s.prompts, &f.sp);
    // What each stream reads once the rows are generated (the separators forced between them).
    let filled = |prompt: &[u32], seps: &[u32]| {
        let mut out = prompt.to_vec();
        for (i, r) in rows.iter().enumerate() {
            if i > 0 {
                out.push(seps[i - 1]);
            }
            out.extend_from_slice(&ex[r.clone()]);
        }
        out.push(f.sp.eos);
        out
    };
    // cond: exactly the training example with the box rows masked.
    assert_eq!(
        filled(&s.prompts.cond, &s.separators),
        f.trained(&ex, &rows)
    );
    // uncond: the training example with the caption masked whole and the rows after it, up to
    // <infill>; its tail is the training tail without the caption's span.
    let caption = f.query_caption(&ex);
    let all: Vec<Range<usize>> = std::iter::once(caption).chain(rows.clone()).collect();
    let trained = f.trained(&ex, &all);
    let cut = trained
        .iter()
        .position(|&t| t == f.sp.infill)
        .expect("<infill>");
    assert_eq!(s.prompts.uncond[..=cut], trained[..=cut]);
    let without_caption = [&trained[..=cut], &trained[cut + 2 + f.text.len()..]].concat();
    assert_eq!(
        filled(&s.prompts.uncond, &s.uncond_separators),
        without_caption
    );
    assert!(!s.prompts.uncond.iter().any(|t| f.text.contains(t)));
    // No caption: both streams are the masked one.
    let none = infill_image(&f.sp, &[], &f.image, 4, bbox).expect("prompts");
    assert_eq!(none.prompts.cond, none.prompts.uncond);
    assert_eq!(none.separators, none.uncond_separators);
    // Bad boxes, and a box needing more sentinels than there are (rows + the caption's).
    assert!(infill_image(&f.sp, &f.text, &f.image, 4, [0, 0, 5, 1]).is_err());
    assert!(infill_image(&f.sp, &f.text, &f.image, 4, [2, 0, 2, 1]).is_err());
    assert!(infill_image(&f.sp, &f.text, &f.image[1..], 4, bbox).is_err());
    let few = Specials {
        sentinels: f.sp.sentinels[..2].to_vec(),
        ..f.sp.clone()
    };
    assert!(infill_image(&few, &f.text, &f.image, 4, bbox).is_err());
    assert!(infill_image(&few, &f.text, &f.image, 4, [1, 1, 3, 2]).is_ok());
}

#[test]
fn editing_and_control_follow_table_5_with_the_text_masked_whole() {
    let f = fixture();
    let prefix = [41, 42];
    let p = edit_image(&f.sp, &prefix, &f.text, &f.image).expect("prompts");
    assert_no_mask(&p, &f.sp);
    let m0 = f.sp.sentinels[0];
    let docs = |texts: &[&[u32]]| {
        let mut out = vec![f.sp.eos];
        for t in texts {
            out.extend_from_slice(t);
            out.push(f.sp.brk);
        }
        out
    };
    assert_eq!(p.cond, docs(&[&prefix, &f.image, &f.text]));
    assert_eq!(p.image_only, docs(&[&prefix, &f.image, &[m0]]));
    // Neither: the unconditional image of pretraining, drawn where training draws it.
    let ex = f.doc(&f.text, &f.image);
    let whole = f.trained(&ex, &[f.query_caption(&ex)]);
    assert_prefix(&[&p.uncond[..], &f.image].concat(), &whole, "neither");
    let empty = edit_image(&f.sp, &prefix, &[], &f.image).expect("prompts");
    assert_eq!(empty.cond, empty.image_only);

    let c = controlled_image(&f.sp, &prefix, &f.image, &f.text).expect("prompts");
    assert_no_mask(&c, &f.sp);
    assert_eq!(c.cond, docs(&[&prefix, &f.image, &f.text]));
    assert_eq!(c.uncond, docs(&[&prefix, &f.image, &[m0]]));
    assert!(c.image_only.is_empty());
}

#[test]
fn a_prompt_holding_mask_is_refused() {
    let f = fixture();
    let p = Prompts {
        uncond: vec![f.sp.eos, f.sp.mask, f.sp.brk],
        ..Prompts::default()
    };
    assert!(p.checked(&f.sp).is_err());
    // Even when it comes in through the caller's tokens.
    assert!(text_to_image(&f.sp, &[], &[40, f.sp.mask]).is_err());
    assert!(image_to_text(&f.sp, &[f.sp.mask]).is_err());
}

#[test]
fn text_spans_stop_at_the_scored_end_and_never_produce_specials() {
    let l = layout();
    let Target::UntilStop { max, allowed, stop } = text_target(&l, 9).expect("target") else {
        panic!("not a text target");
    };
    assert_eq!(max, 9);
    let is_allowed = |t: u32| allowed.iter().any(|r| r.contains(&(t as usize)));
    let eos = l.special(vocab::EOS).expect("eos");
    assert!(stop.contains(&eos));
    for s in l.sentinels() {
        assert!(stop.contains(&s) && !is_allowed(s));
    }
    let mask = l.special(vocab::MASK).expect("mask");
    assert!(!stop.contains(&mask) && !is_allowed(mask));
    assert!(l.text.specials.values().all(|&s| !is_allowed(s)));
    // Every ordinary text id, and no image code.
    assert!((13..300).all(is_allowed));
    assert!(!is_allowed(l.image.offset));
}

/// Every task's streams through the decoder with guidance (a tiny random model over the test
/// layout): the rows fit one batch, the forced separators differ per stream, and the outputs are
/// of the task's kind.
#[test]
fn every_task_decodes_with_guidance() -> Result<()> {
    use burn::tensor::Device;
    use cm3_model::decoder::{Cm3Decoder, DecoderConfig, ZeroInit};

    use crate::decode::{Guidance, Request, generate};
    use crate::sampling::Sampling;

    let (f, l) = (fixture(), layout());
    let device = Device::flex();
    let cfg = DecoderConfig {
        vocab_size: l.size as usize,
        d_model: 32,
        n_heads: 4,
        ffn_dim: 64,
        n_layers: 1,
        max_seq_len: 64,
        zero_init: ZeroInit::None,
        init_std: 0.2,
        ..DecoderConfig::default()
    };
    let model = Cm3Decoder::init(&cfg, 5, &device)?;
    let run = |p: &Prompts, target: Target, guidance: Guidance| {
        generate(
            &model,
            &cfg,
            &Request {
                cond: std::slice::from_ref(&p.cond),
                uncond: std::slice::from_ref(&p.uncond),
                image_only: if p.image_only.is_empty() {
                    &[]
                } else {
                    std::slice::from_ref(&p.image_only)
                },
                target,
                guidance,
                sampling: Sampling::default(),
                seeds: &[11],
            },
            &device,
        )
    };
    let codes = l.image.offset as usize..l.size as usize;
    let is_code = |t: &u32| codes.contains(&(*t as usize));
    let cfg3 = Guidance::Cfg { cfg_scale: 3.0 };
    let image = |count| Target::Fixed {
        count,
        allowed: codes.clone(),
    };

    let t2i = run(&text_to_image(&f.sp, &[], &f.text)?, image(16), cfg3)?;
    assert!(t2i[0].len() == 16 && t2i[0].iter().all(is_code));
    let i2t = run(&image_to_text(&f.sp, &f.image)?, text_target(&l, 6)?, cfg3)?;
    assert!(i2t[0].len() <= 6 && i2t[0].iter().all(|t| (13..300).contains(t)));
    let s = infill_image(&f.sp, &f.text, &f.image, 4, [1, 1, 3, 3])?;
    let target = Target::Spans {
        lengths: vec![2, 2],
        separators: s.separators.clone(),
        uncond_separators: s.uncond_separators.clone(),
        allowed: codes.clone(),
    };
    let rows = run(&s.prompts, target, cfg3)?;
    assert!(rows[0].len() == 4 && rows[0].iter().all(is_code));
    let edit = Guidance::Edit {
        text_scale: 7.5,
        image_scale: 1.5,
    };
    let edited = run(
        &edit_image(&f.sp, &[41], &f.text, &f.image)?,
        image(16),
        edit,
    )?;
    assert!(edited[0].len() == 16 && edited[0].iter().all(is_code));
    Ok(())
}
