//! Text → image sampling throughput on the same OPT weights as Hugging Face transformers'
//! `generate` (issue 23; `bench/generate_vs_hf.sh` runs both and prints the ratio): `batch`
//! samples of 256 image tokens after a `prompt`-token prompt, top-p 0.9, no guidance, one
//! key/value cache, flex CPU backend. The weights are an OPT checkpoint folder (`config.json` +
//! `model.safetensors`, as `bench/generate_hf.py` writes them).
//!
//! `cargo bench -p cm3-generate --bench t2i_vs_hf -- <opt dir> [batch] [reps] [prompt]`;
//! prints `images_per_s <median over reps>`. Threads: `RAYON_NUM_THREADS`.
use std::time::Instant;

use burn::tensor::Device;
use cm3_generate::{Guidance, Request, Sampling, Target, generate};
use cm3_model::decoder::{Cm3Decoder, HfOptConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let dir = std::path::PathBuf::from(
        args.first()
            .ok_or("usage: <opt dir> [batch] [reps] [prompt]")?,
    );
    let batch: usize = args.get(1).map_or(Ok(1), |s| s.parse())?;
    let reps: usize = args.get(2).map_or(Ok(3), |s| s.parse())?;
    let prompt_len: usize = args.get(3).map_or(Ok(16), |s| s.parse())?;
    let device = Device::flex();
    let hf: HfOptConfig = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json"))?)?;
    let cfg = hf.to_decoder(&dir.display().to_string())?;
    let model = Cm3Decoder::load(&dir.join("model.safetensors"), &cfg, &device)?;
    // The same prompt ids as generate_hf.py: (7919·i) mod (vocab − 16) + 16.
    let prompt: Vec<u32> = (0..prompt_len)
        .map(|i| ((7919 * i) % (cfg.vocab_size - 16) + 16) as u32)
        .collect();
    let cond = vec![prompt; batch];
    let seeds: Vec<u64> = (0..batch as u64).collect();
    let run = || -> Result<f64, Box<dyn std::error::Error>> {
        let t = Instant::now();
        let out = generate(
            &model,
            &cfg,
            &Request {
                cond: &cond,
                uncond: &[],
                image_only: &[],
                target: Target::Fixed {
                    count: 256,
                    allowed: 0..cfg.vocab_size,
                },
                guidance: Guidance::None,
                sampling: Sampling {
                    top_p: 0.9,
                    ..Sampling::default()
                },
                seeds: &seeds,
            },
            &device,
        )?;
        assert!(out.iter().all(|s| s.len() == 256));
        Ok(batch as f64 / t.elapsed().as_secs_f64())
    };
    run()?; // warm-up
    let mut rates = (0..reps).map(|_| run()).collect::<Result<Vec<_>, _>>()?;
    rates.sort_by(f64::total_cmp);
    println!("images_per_s {:.4}", rates[rates.len() / 2]);
    Ok(())
}
