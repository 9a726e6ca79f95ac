//! Decoding costs on a small model (4 layers, d 256, 8 heads, vocabulary 8,192, 4,096
//! positions), flex CPU backend:
//! 1. per-token latency at positions 16 … 4,000 with the key/value cache against recomputing the
//!    prefix;
//! 2. the cost of classifier-free guidance (two streams as two rows of one batch) relative to
//!    unguided decoding;
//! 3. images (256 image tokens, CFG) per second against batch size.
//!
//! `cargo bench --bench decode_latency` (add `-- quick` for fewer positions and batches).
use std::time::Instant;

use burn::tensor::{Device, Int, Tensor, TensorData};
use cm3_generate::{Guidance, Request, Sampling, Target, generate};
use cm3_model::decoder::{Cm3Decoder, DecoderConfig, KvCache, ZeroInit};

fn ids(v: Vec<i64>, rows: usize, device: &Device) -> Tensor<2, Int> {
    let t = v.len() / rows;
    Tensor::from_data(TensorData::new(v, [rows, t]), device)
}

fn median(mut x: Vec<f64>) -> f64 {
    x.sort_by(f64::total_cmp);
    x[x.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let quick = std::env::args().any(|a| a == "quick");
    let device = Device::flex();
    let cfg = DecoderConfig {
        vocab_size: 8192,
        d_model: 256,
        n_heads: 8,
        ffn_dim: 1024,
        n_layers: 4,
        max_seq_len: 4096,
        zero_init: ZeroInit::None,
        ..DecoderConfig::default()
    };
    let model = Cm3Decoder::init(&cfg, 0, &device)?;
    let token = |i: usize| ((i * 7919) % 8000 + 13) as i64;

    println!("per-token latency (batch 1):");
    println!(
        "{:>9} {:>12} {:>14} {:>8}",
        "position", "cached ms", "recompute ms", "ratio"
    );
    let positions: &[usize] = if quick {
        &[16, 256, 1024]
    } else {
        &[16, 256, 1024, 2048, 4000]
    };
    for &pos in positions {
        let prefix: Vec<i64> = (0..pos).map(token).collect();
        let mut cached = Vec::new();
        for rep in 0..5 {
            let mut cache = KvCache::new(&cfg, vec![0], pos + 8, &device);
            model.forward_cached(&cfg, ids(prefix.clone(), 1, &device), &mut cache)?;
            let t = Instant::now();
            let l =
                model.forward_cached(&cfg, ids(vec![token(pos + rep)], 1, &device), &mut cache)?;
            let _ = l.into_data();
            cached.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let mut recompute = Vec::new();
        for _ in 0..if pos > 1024 { 1 } else { 3 } {
            let mut all = prefix.clone();
            all.push(token(pos));
            let t = Instant::now();
            let l = model.forward(&cfg, ids(all, 1, &device))?;
            let _ = l.into_data();
            recompute.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let (c, r) = (median(cached), median(recompute));
        println!("{pos:>9} {c:>12.2} {r:>14.1} {:>7.0}x", r / c);
    }

    let steps = if quick { 32 } else { 128 };
    let prompt: Vec<Vec<u32>> = vec![(0..16).map(|i| token(i) as u32).collect()];
    // `<eos> <mask:0> <break>` in the standard layout: t2i's unconditional stream.
    let uncond: Vec<Vec<u32>> = vec![vec![1, 5, 2]];
    let time = |guidance: Guidance, cond: &[Vec<u32>], uncond: &[Vec<u32>], seeds: &[u64]| {
        let t = Instant::now();
        generate(
            &model,
            &cfg,
            &Request {
                cond,
                uncond,
                image_only: &[],
                target: Target::Fixed {
                    count: steps,
                    allowed: 4096..8192,
                },
                guidance,
                sampling: Sampling::default(),
                seeds,
            },
            &device,
        )
        .map(|_| t.elapsed().as_secs_f64())
    };
    let plain = median(
        (0..3)
            .map(|_| time(Guidance::None, &prompt, &[], &[1]))
            .collect::<Result<_, _>>()?,
    );
    let cfg_t = median(
        (0..3)
            .map(|_| time(Guidance::Cfg { cfg_scale: 3.0 }, &prompt, &uncond, &[1]))
            .collect::<Result<_, _>>()?,
    );
    println!(
        "\n{steps} tokens, batch 1: unguided {:.2} ms/token, CFG (2 streams) {:.2} ms/token: \
         {:.2}x",
        plain * 1e3 / steps as f64,
        cfg_t * 1e3 / steps as f64,
        cfg_t / plain
    );

    println!("\nimages/s (256 image tokens each after a 16-token prompt, CFG 3.0):");
    let batches: &[usize] = if quick { &[1, 4] } else { &[1, 2, 4, 8] };
    for &b in batches {
        let cond = vec![prompt[0].clone(); b];
        let unc = vec![uncond[0].clone(); b];
        let seeds: Vec<u64> = (0..b as u64).collect();
        let t = Instant::now();
        generate(
            &model,
            &cfg,
            &Request {
                cond: &cond,
                uncond: &unc,
                image_only: &[],
                target: Target::Fixed {
                    count: 256,
                    allowed: 4096..8192,
                },
                guidance: Guidance::Cfg { cfg_scale: 3.0 },
                sampling: Sampling::default(),
                seeds: &seeds,
            },
            &device,
        )?;
        let s = t.elapsed().as_secs_f64();
        println!("  batch {b:>2}: {:.2} images/s ({s:.1} s)", b as f64 / s);
    }
    Ok(())
}
