//! Experiments (ignored): flat coloured shapes through a freshly trained small tokenizer.

use std::time::Instant;

use burn::tensor::Device;
use cm3_core::rng::SplitMix64;

use super::{VqTrainConfig, VqTrainer};

const PALETTE: [[u8; 3]; 6] = [
    [220, 30, 30],
    [245, 140, 20],
    [240, 220, 30],
    [40, 170, 60],
    [30, 70, 220],
    [140, 50, 180],
];
const BACKGROUNDS: [[u8; 3]; 2] = [[255, 255, 255], [0, 0, 0]];

/// One flat shape: RGB bytes, its colour index, the shape mask.
struct Shape {
    rgb: Vec<u8>,
    colour: usize,
    mask: Vec<bool>,
}

fn shape(side: usize, rng: &mut SplitMix64) -> Shape {
    let s = side as f64;
    let kind = rng.below(3);
    let colour = rng.below(6) as usize;
    let bg = BACKGROUNDS[rng.below(2) as usize];
    let r = s * (0.16 + 0.15 * rng.next_f64());
    let cx = r + 0.03 * s + (s - 2.0 * r - 0.06 * s) * rng.next_f64();
    let cy = r + 0.03 * s + (s - 2.0 * r - 0.06 * s) * rng.next_f64();
    let mut rgb = Vec::with_capacity(side * side * 3);
    let mut mask = Vec::with_capacity(side * side);
    for y in 0..side {
        for x in 0..side {
            let (dx, dy) = (x as f64 + 0.5 - cx, y as f64 + 0.5 - cy);
            let inside = match kind {
                0 => dx * dx + dy * dy <= r * r,
                1 => dx.abs() <= r * 0.85 && dy.abs() <= r * 0.85,
                _ => dy <= r * 0.8 && dy >= -r && dx.abs() <= (dy + r) * 0.58,
            };
            mask.push(inside);
            rgb.extend(if inside { PALETTE[colour] } else { bg });
        }
    }
    Shape { rgb, colour, mask }
}

fn to_chw(rgb: &[u8], side: usize, top: usize, left: usize, crop: usize) -> Vec<f32> {
    let mut out = vec![0f32; 3 * crop * crop];
    for y in 0..crop {
        for x in 0..crop {
            let px = &rgb[((top + y) * side + left + x) * 3..][..3];
            for c in 0..3 {
                out[c * crop * crop + y * crop + x] = f32::from(px[c]) / 127.5 - 1.0;
            }
        }
    }
    out
}

fn env(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
#[ignore = "an experiment: VQX_* variables"]
fn flat_shapes_experiment() {
    let mut cfg = VqTrainConfig::default();
    if let Ok(n) = std::env::var("VQX_NORM") {
        cfg.model.norm = serde_json::from_value(n.into()).expect("norm");
    }
    cfg.steps = env("VQX_STEPS", 100.0) as usize;
    cfg.batch_size = env("VQX_BATCH", cfg.batch_size as f64) as usize;
    cfg.learning_rate = env("VQX_LR", cfg.learning_rate);
    cfg.model.resolution = env("VQX_CROP", cfg.model.resolution as f64) as usize;
    cfg.ema_decay = env("VQX_DECAY", cfg.ema_decay);
    cfg.commitment = env("VQX_COMMIT", cfg.commitment);
    cfg.model.ch = env("VQX_CH", cfg.model.ch as f64) as usize;
    if let Ok(m) = std::env::var("VQX_MULT") {
        cfg.model.ch_mult = m.split(',').map(|v| v.parse().expect("mult")).collect();
    }
    cfg.restart_every = env("VQX_RESTART_EVERY", cfg.restart_every as f64) as usize;
    cfg.dead_code_usage = env("VQX_DEAD", cfg.dead_code_usage);
    let side = env("VQX_SIDE", 128.0) as usize;
    let pool = env("VQX_N", 600.0) as usize;
    let crop = cfg.model.resolution;
    let mut rng = SplitMix64::new(1);
    let train: Vec<Shape> = (0..pool).map(|_| shape(side, &mut rng)).collect();
    let mut erng = SplitMix64::new(2);
    let eval: Vec<Shape> = (0..env("VQX_EVAL", 30.0) as usize)
        .map(|_| shape(side, &mut erng))
        .collect();
    let eval_crops: Vec<f32> = eval
        .iter()
        .flat_map(|s| to_chw(&s.rgb, side, (side - crop) / 2, (side - crop) / 2, crop))
        .collect();
    {
        // Baselines on the eval crops: each crop's mean, each 8 x 8 patch's mean.
        let (mut m1, mut m8) = (0f64, 0f64);
        let plane = crop * crop;
        for img in eval_crops.chunks(3 * plane) {
            for ch in img.chunks(plane) {
                let mean = ch.iter().map(|&v| f64::from(v)).sum::<f64>() / plane as f64;
                m1 += ch
                    .iter()
                    .map(|&v| (f64::from(v) - mean).powi(2))
                    .sum::<f64>();
                for py in 0..crop / 8 {
                    for px in 0..crop / 8 {
                        let vals: Vec<f64> = (0..64)
                            .map(|i| f64::from(ch[(py * 8 + i / 8) * crop + px * 8 + i % 8]))
                            .collect();
                        let m = vals.iter().sum::<f64>() / 64.0;
                        m8 += vals.iter().map(|v| (v - m).powi(2)).sum::<f64>();
                    }
                }
            }
        }
        let n = eval_crops.len() as f64;
        eprintln!(
            "baseline MSE: crop mean {:.4}, 8x8 patch mean {:.4}",
            m1 / n,
            m8 / n
        );
    }
    let mut trainer = VqTrainer::new(cfg.clone(), &Device::flex().autodiff()).expect("trainer");
    let started = Instant::now();
    for step in 0..cfg.steps {
        let mut batch = Vec::new();
        for _ in 0..cfg.batch_size {
            let p = &train[rng.below(train.len() as u64) as usize];
            let span = (side - crop + 1) as u64;
            let (top, left) = (rng.below(span) as usize, rng.below(span) as usize);
            batch.extend(to_chw(&p.rgb, side, top, left, crop));
        }
        if std::env::var("VQX_FIXED").is_ok() {
            batch = eval_crops[..cfg.batch_size * 3 * crop * crop].to_vec();
        }
        let s = trainer.step(batch, cfg.batch_size).expect("step");
        let every = env("VQX_EVAL_EVERY", 0.0) as usize;
        if every > 0 && (step + 1) % every == 0 {
            let mse = trainer
                .evaluate(eval_crops.clone(), eval.len())
                .expect("evaluate");
            eprintln!(
                "eval at {}: crop MSE {mse:.4} ({:.2} dB)",
                step + 1,
                10.0 * (4.0 / mse).log10()
            );
        }
        if step % 50 == 0 || step + 1 == cfg.steps {
            eprintln!(
                "step {step} loss {:.4} rec {:.4} perplexity {:.1} restarted {} ({:.1} s)",
                s.loss,
                s.reconstruction,
                s.perplexity,
                s.restarted,
                started.elapsed().as_secs_f64()
            );
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let tok = trainer.finish(&Device::flex(), side).expect("finish");
    let n = eval.len();
    let pixels: Vec<f32> = eval
        .iter()
        .flat_map(|s| to_chw(&s.rgb, side, 0, 0, side))
        .collect();
    let codes = tok.encode_pixels(pixels, n, side, side).expect("encode");
    let g = side / cfg.model.factor();
    let out = tok.decode(&codes, n, g, g).expect("decode");
    let whole = out.into_data().try_into_vec_as::<f32>().expect("pixels");
    let plane = side * side;
    let mut outs = vec![("whole", whole.clone())];
    if std::env::var("VQX_TILES").is_ok() {
        let mut out = whole;
        // Tokenise and decode every image as separate crop-sized tiles, as in training.
        let t = side / crop;
        let tiles: Vec<f32> = eval
            .iter()
            .flat_map(|s| {
                (0..t * t)
                    .flat_map(move |i| to_chw(&s.rgb, side, (i / t) * crop, (i % t) * crop, crop))
            })
            .collect();
        let gc = crop / cfg.model.factor();
        let codes = tok
            .encode_pixels(tiles, n * t * t, crop, crop)
            .expect("encode tiles");
        let dec = tok.decode(&codes, n * t * t, gc, gc).expect("decode tiles");
        let dec = dec
            .into_data()
            .try_into_vec_as::<f32>()
            .expect("tile pixels");
        let cp = crop * crop;
        for img in 0..n {
            for i in 0..t * t {
                let (ty, tx) = ((i / t) * crop, (i % t) * crop);
                let tile = &dec[(img * t * t + i) * 3 * cp..][..3 * cp];
                for c in 0..3 {
                    for y in 0..crop {
                        for x in 0..crop {
                            out[img * 3 * plane + c * plane + (ty + y) * side + tx + x] =
                                tile[c * cp + y * crop + x];
                        }
                    }
                }
            }
        }
        outs.push(("tiles", out));
    }
    for (what, out) in outs {
        let (mut se, mut right, mut bg_right, mut dominant) = (0f64, 0, 0, 0);
        for (i, s) in eval.iter().enumerate() {
            let img = &out[i * 3 * plane..(i + 1) * 3 * plane];
            let mut mean = [0f64; 3];
            let mut bg = [0f64; 3];
            let inside = s.mask.iter().filter(|&&m| m).count().max(1) as f64;
            let outside = (plane as f64 - inside).max(1.0);
            for p in 0..plane {
                for c in 0..3 {
                    let v =
                        f64::from(((img[c * plane + p].clamp(-1.0, 1.0) + 1.0) * 127.5).round());
                    let d = v - f64::from(s.rgb[p * 3 + c]);
                    se += d * d;
                    if s.mask[p] {
                        mean[c] += v / inside;
                    } else {
                        bg[c] += v / outside;
                    }
                }
            }
            let dist = |a: &[f64; 3], b: &[u8; 3]| {
                (0..3)
                    .map(|c| (a[c] - f64::from(b[c])).powi(2))
                    .sum::<f64>()
            };
            let best = (0..6)
                .min_by(|&a, &b| dist(&mean, &PALETTE[a]).total_cmp(&dist(&mean, &PALETTE[b])))
                .expect("palette");
            right += usize::from(best == s.colour);
            {
                // Dominant colour: every pixel's nearest of the palette and the two backgrounds.
                let mut counts = [0usize; 6];
                for p in 0..plane {
                    let v: [f64; 3] = std::array::from_fn(|c| {
                        ((out[i * 3 * plane + c * plane + p].clamp(-1.0, 1.0) + 1.0) * 127.5).into()
                    });
                    let d = |q: &[u8; 3]| {
                        (0..3)
                            .map(|c| (v[c] - f64::from(q[c])).powi(2))
                            .sum::<f64>()
                    };
                    let bgd = d(&BACKGROUNDS[0]).min(d(&BACKGROUNDS[1]));
                    let (k, kd) = (0..6)
                        .map(|k| (k, d(&PALETTE[k])))
                        .min_by(|a, b| a.1.total_cmp(&b.1))
                        .expect("palette");
                    if kd < bgd {
                        counts[k] += 1;
                    }
                }
                let dom = (0..6).max_by_key(|&k| counts[k]).expect("palette");
                dominant += usize::from(dom == s.colour && counts[dom] > 0);
            }
            if best != s.colour {
                eprintln!(
                    "  wrong: {:?} -> {:?} (mean inside {:.0?})",
                    PALETTE[s.colour], PALETTE[best], mean
                );
            }
            let true_bg = &s.rgb[s.mask.iter().position(|m| !m).unwrap_or(0) * 3..][..3];
            let bgi = usize::from(dist(&bg, &BACKGROUNDS[1]) < dist(&bg, &BACKGROUNDS[0]));
            bg_right += usize::from(BACKGROUNDS[bgi] == true_bg);
            if i < 3 {
                eprintln!(
                    "  eval {i}: colour {:?} -> mean inside {:.0?}; background -> {:.0?}",
                    PALETTE[s.colour], mean, bg
                );
            }
        }
        let mse = se / (n * 3 * plane) as f64;
        let used: std::collections::BTreeSet<u32> = codes.iter().copied().collect();
        eprintln!(
            "RESULT {what} norm {:?} ch {} {:?} crop {crop} batch {} steps {} lr {} decay {} restart {}/{}: PSNR {:.2} dB, colour {right}/{n}, dominant {dominant}/{n}, \
         background {bg_right}/{n}, codes used {}, {seconds:.1} s",
            cfg.model.norm,
            cfg.model.ch,
            cfg.model.ch_mult,
            cfg.batch_size,
            cfg.steps,
            cfg.learning_rate,
            cfg.ema_decay,
            cfg.restart_every,
            cfg.dead_code_usage,
            10.0 * (255.0f64 * 255.0 / mse).log10(),
            used.len(),
        );
    }
}

/// 16 × 16 images of two flat colours, as a shape on a background is: each 8 × 8 quadrant (one
/// code at f8) is either a palette colour (one per image) or the background (white or black).
/// NCHW in [-1, 1], and each quadrant's colour (0..6 the palette, 6 and 7 the backgrounds).
fn quadrants(n: usize, rng: &mut SplitMix64) -> (Vec<f32>, Vec<usize>) {
    let colours: Vec<[u8; 3]> = PALETTE.iter().chain(&BACKGROUNDS).copied().collect();
    let mut pixels = Vec::with_capacity(n * 3 * 256);
    let mut truth = Vec::with_capacity(n * 4);
    for _ in 0..n {
        let (colour, background) = (rng.below(6) as usize, 6 + rng.below(2) as usize);
        let shape = 1 + rng.below(15);
        let q: Vec<usize> = (0..4)
            .map(|i| {
                if shape >> i & 1 == 1 {
                    colour
                } else {
                    background
                }
            })
            .collect();
        for c in 0..3 {
            for y in 0..16 {
                for x in 0..16 {
                    let v = colours[q[(y / 8) * 2 + x / 8]].get(c).copied().unwrap_or(0);
                    pixels.push(f32::from(v) / 127.5 - 1.0);
                }
            }
        }
        truth.extend(q);
    }
    (pixels, truth)
}

/// Share of the palette-coloured quadrants whose reconstructed mean colour is nearest to the
/// right one of the 8 colours.
fn flat_colour_accuracy(cfg: VqTrainConfig, steps: usize) -> f64 {
    let mut trainer = VqTrainer::new(cfg.clone(), &Device::flex().autodiff()).expect("trainer");
    let mut rng = SplitMix64::new(3);
    for _ in 0..steps {
        let (batch, _) = quadrants(cfg.batch_size, &mut rng);
        trainer.step(batch, cfg.batch_size).expect("step");
    }
    let tok = trainer.finish(&Device::flex(), 16).expect("finish");
    let n = 16;
    let (pixels, truth) = quadrants(n, &mut SplitMix64::new(4));
    let codes = tok.encode_pixels(pixels, n, 16, 16).expect("encode");
    let out = tok.decode(&codes, n, 2, 2).expect("decode");
    let out = out.into_data().try_into_vec_as::<f32>().expect("pixels");
    let colours: Vec<[u8; 3]> = PALETTE.iter().chain(&BACKGROUNDS).copied().collect();
    let (mut right, mut total) = (0, 0);
    for (i, &want) in truth.iter().enumerate() {
        let (img, q) = (i / 4, i % 4);
        let mean: [f64; 3] = std::array::from_fn(|c| {
            let mut s = 0f64;
            for y in 0..8 {
                for x in 0..8 {
                    let (yy, xx) = ((q / 2) * 8 + y, (q % 2) * 8 + x);
                    s += f64::from(out[img * 768 + c * 256 + yy * 16 + xx]);
                }
            }
            (s / 64.0 + 1.0) * 127.5
        });
        let dist = |k: usize| {
            (0..3)
                .map(|c| (mean[c] - f64::from(colours[k][c])).powi(2))
                .sum::<f64>()
        };
        let best = (0..8)
            .min_by(|&a, &b| dist(a).total_cmp(&dist(b)))
            .expect("colours");
        if want < 6 {
            right += usize::from(best == want);
            total += 1;
        }
    }
    right as f64 / total as f64
}

#[test]
#[ignore = "not yet met: 0.718 of the 0.9 asserted after 150 steps (measured 2026-12-05); run with --ignored"]
fn flat_colours_come_back_after_a_short_training() {
    let mut cfg = VqTrainConfig::default();
    // 32 code positions a batch: 64 codes keep the average use per code and step (0.5) of the
    // default's 128 positions and 256 codes, which the dead-code threshold is set for.
    cfg.model.resolution = 16;
    cfg.model.n_embed = 64;
    let steps = env("VQX_QSTEPS", 150.0) as usize;
    cfg.steps = steps;
    if let Ok(n) = std::env::var("VQX_NORM") {
        cfg.model.norm = serde_json::from_value(n.into()).expect("norm");
    }
    cfg.model.ch = env("VQX_CH", cfg.model.ch as f64) as usize;
    if let Ok(m) = std::env::var("VQX_MULT") {
        cfg.model.ch_mult = m.split(',').map(|v| v.parse().expect("mult")).collect();
    }
    cfg.ema_decay = env("VQX_DECAY", cfg.ema_decay);
    cfg.commitment = env("VQX_COMMIT", cfg.commitment);
    cfg.restart_every = env("VQX_RESTART_EVERY", cfg.restart_every as f64) as usize;
    cfg.dead_code_usage = env("VQX_DEAD", cfg.dead_code_usage);
    cfg.learning_rate = env("VQX_LR", cfg.learning_rate);
    cfg.model.n_embed = env("VQX_K", cfg.model.n_embed as f64) as usize;
    cfg.batch_size = env("VQX_BATCH", cfg.batch_size as f64) as usize;
    let started = Instant::now();
    let acc = flat_colour_accuracy(cfg, steps);
    eprintln!(
        "flat colours: {acc:.3} right after {steps} steps, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(acc >= 0.9, "{acc}");
}
