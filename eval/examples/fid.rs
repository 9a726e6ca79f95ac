//! FID from the command line (until `cm3 eval fid` exists), and the cm3 side of
//! `bench/fid_features.sh`:
//!
//!     cargo run --release -p cm3-eval --example fid -- dirs MODEL.onnx DIR_A DIR_B [BATCH] [THREADS]
//!     cargo run --release -p cm3-eval --example fid -- features MODEL.onnx LIST.txt [BATCH] [THREADS] [RUNS]
//!
//! `features` reads image paths (one a line), extracts their features RUNS times and prints one
//! JSON line per run: {"images": n, "seconds": s, "images_per_s": r} (model loading excluded).
//!
//!     cargo run --release -p cm3-eval --example fid -- timing [N] [DIM]
//!
//! times `statistics` and `frechet_distance` on two sets of N pseudo-random DIM-d rows.
use std::path::{Path, PathBuf};
use std::time::Instant;

use cm3_eval::fid;

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: T) -> Result<T, String> {
    args.get(i).map_or(Ok(default), |s| {
        s.parse()
            .map_err(|_| format!("argument {i}: {s:?} is not a number"))
    })
}

fn run(args: &[String]) -> Result<(), String> {
    let usage = "usage: fid dirs MODEL DIR_A DIR_B [BATCH] [THREADS] | fid features MODEL LIST [BATCH] [THREADS] [RUNS]";
    match args.first().map(String::as_str) {
        Some("dirs") if args.len() >= 4 => {
            let (batch, threads) = (arg(args, 4, 50)?, arg(args, 5, 0)?);
            let report = fid::fid_of_dirs(
                Path::new(&args[1]),
                Path::new(&args[2]),
                Path::new(&args[3]),
                batch,
                threads,
            )
            .map_err(|e| e.to_string())?;
            print!("{}", report.table());
            println!("{}", report.to_json());
            Ok(())
        }
        Some("features") if args.len() >= 3 => {
            let (batch, threads, runs) = (arg(args, 3, 50)?, arg(args, 4, 0)?, arg(args, 5, 1)?);
            let list =
                std::fs::read_to_string(&args[2]).map_err(|e| format!("{}: {e}", args[2]))?;
            let files: Vec<PathBuf> = list
                .lines()
                .filter(|l| !l.is_empty())
                .map(PathBuf::from)
                .collect();
            let mut net =
                fid::InceptionFeatures::load(Path::new(&args[1]), fid::DIMS, batch, threads)
                    .map_err(|e| e.to_string())?;
            for _ in 0..runs {
                let t = Instant::now();
                let f = net.features(&files).map_err(|e| e.to_string())?;
                let s = t.elapsed().as_secs_f64();
                let n = f.len() / fid::DIMS;
                println!(
                    "{{\"images\": {n}, \"seconds\": {s:.4}, \"images_per_s\": {:.3}}}",
                    n as f64 / s
                );
            }
            Ok(())
        }
        Some("timing") => timing(arg(args, 1, 5000)?, arg(args, 2, fid::DIMS)?),
        _ => Err(usage.into()),
    }
}

fn timing(n: usize, dim: usize) -> Result<(), String> {
    let mut seed = 1u64;
    let mut rows = |shift: f32| -> Vec<f32> {
        (0..n * dim)
            .map(|i| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                // Correlated features: a shared term per row plus noise.
                ((seed >> 40) as f32 / (1u64 << 24) as f32)
                    + shift * ((i % dim) as f32 / dim as f32)
            })
            .collect()
    };
    let (a, b) = (rows(0.0), rows(0.3));
    let t = Instant::now();
    let (sa, sb) = (
        fid::statistics(&a, dim).map_err(|e| e.to_string())?,
        fid::statistics(&b, dim).map_err(|e| e.to_string())?,
    );
    let stats_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let d = fid::frechet_distance(&sa, &sb).map_err(|e| e.to_string())?;
    println!(
        "{n} x {dim}: statistics (both sets) {stats_s:.2} s, frechet_distance {:.2} s, value {d}",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        eprintln!("fid: {e}");
        std::process::exit(2);
    }
}
