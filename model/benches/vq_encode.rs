//! VQ image tokenizer encode throughput (issue 23): taming's `vqgan_gumbel_f8` architecture
//! (`VqConfig::gumbel_f8`: ch 128, multipliers [1, 1, 2, 4], 2 residual blocks, attention at 32,
//! 8,192 codes) with random weights, 256² images → 32 × 32 codes, what `cm3 tokenize` runs per
//! batch (`VqTokenizer::encode_pixels`: encoder, quant_conv, the Gumbel projection, argmax).
//! `bench/vq_vs_taming.sh` runs it beside taming-transformers on PyTorch and prints the ratio.
//!
//! `cargo bench -p cm3-model --bench vq_encode -- [batch] [reps] [flex|wgpu]`; prints one line:
//! `images_per_s <median over reps>`. Threads: `RAYON_NUM_THREADS`.
use std::time::Instant;

use burn::tensor::Device;
use cm3_model::vq::{VqConfig, VqTokenizer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let batch: usize = args.first().map_or(Ok(4), |s| s.parse())?;
    let reps: usize = args.get(1).map_or(Ok(5), |s| s.parse())?;
    let backend = args.get(2).map_or("flex", String::as_str);
    let device = match backend {
        "flex" => Device::flex(),
        #[cfg(feature = "wgpu")]
        "wgpu" => cm3_model::device::wgpu()?,
        other => return Err(format!("backend {other}: flex, or wgpu with --features wgpu").into()),
    };
    let tok = VqTokenizer::new(VqConfig::gumbel_f8(), &device)?;
    let side = 256;
    // Smooth random-ish pixels in [-1, 1] (the values do not change the arithmetic).
    let pixels: Vec<f32> = (0..batch * 3 * side * side)
        .map(|i| ((i as f32 * 0.618_034).fract() * 2.0 - 1.0) * 0.9)
        .collect();
    // Warm-up: kernels compiled (wgpu) and buffers allocated once.
    let codes = tok.encode_pixels(pixels.clone(), batch, side, side)?;
    assert_eq!(codes.len(), batch * 32 * 32);
    let mut rates = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        let codes = tok.encode_pixels(pixels.clone(), batch, side, side)?;
        std::hint::black_box(codes);
        rates.push(batch as f64 / t.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    println!("images_per_s {:.3}", rates[rates.len() / 2]);
    Ok(())
}
