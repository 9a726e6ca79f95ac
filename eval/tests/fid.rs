//! FID against pytorch-fid 0.3.0 itself: features of real images through a random-weight export
//! of pytorch-fid's Inception (`fixtures/fid/inception_random.onnx.gz`), the FID of two folders,
//! and `calculate_frechet_distance` (scipy) on fixed matrices; references made by
//! `fixtures/fid/make.py`.
//!
//! The ONNX tests install ONNX Runtime on first use with `scripts/setup-onnxruntime.sh`, as
//! cm3-embed's tests do, and fail when it cannot be had; with `CM3_SKIP_ONNX_TESTS=1` they are
//! skipped instead, saying so.
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cm3_embed::npy::Npy;
use cm3_eval::EvalError;
use cm3_eval::fid::{self, InceptionFeatures, Stats};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fid")
}

/// ONNX Runtime, installed by the project's set-up script on first use; `None` (with a notice)
/// only when it is missing and CM3_SKIP_ONNX_TESTS=1.
fn runtime(test: &str) -> Option<()> {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        if cm3_embed::onnx::find_onnxruntime().is_err() {
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/setup-onnxruntime.sh");
            let status = std::process::Command::new("bash").arg(&script).status();
            if !status.as_ref().is_ok_and(|s| s.success()) {
                return Err(format!("{} failed ({status:?})", script.display()));
            }
        }
        cm3_embed::onnx::find_onnxruntime()
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    match ready {
        Ok(()) => Some(()),
        Err(e) if std::env::var_os("CM3_SKIP_ONNX_TESTS").is_some() => {
            eprintln!("SKIPPED {test}: ONNX Runtime is not available: {e}");
            None
        }
        Err(e) => panic!("ONNX Runtime is not available ({e}); set CM3_SKIP_ONNX_TESTS=1 to skip"),
    }
}

/// The random-weight Inception, ungzipped once into a temporary folder kept for the process.
fn model() -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let gz = fixtures().join("inception_random.onnx.gz");
        let file = std::fs::File::open(&gz).unwrap_or_else(|e| panic!("{}: {e}", gz.display()));
        let mut bytes = Vec::new();
        flate2::read::GzDecoder::new(file)
            .read_to_end(&mut bytes)
            .expect("gunzip model");
        std::fs::write(dir.path().join("inception_random.onnx"), bytes).expect("write model");
        dir
    });
    dir.path().join("inception_random.onnx")
}

/// A float64 .npy fixture: (shape, values).
fn read_f64(path: &Path) -> (Vec<usize>, Vec<f64>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let npy = Npy::parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(npy.descr, "<f8", "{}", path.display());
    let values = npy
        .data
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    (npy.shape, values)
}

fn reference() -> serde_json::Value {
    let path = fixtures().join("reference.json");
    serde_json::from_str(&std::fs::read_to_string(&path).expect("reference.json"))
        .expect("reference json")
}

#[test]
fn features_equal_pytorch_fid_get_activations() {
    let Some(()) = runtime("features_equal_pytorch_fid_get_activations") else {
        return;
    };
    // Batches of 4 mix sizes (102x102 to 640x427, gray, RGBA, JPEG): the resize happens per image.
    let mut net = InceptionFeatures::load(&model(), fid::DIMS, 4, 2).expect("load model");
    let reference = reference();
    for set in ["a", "b"] {
        let files = fid::image_files(&fixtures().join("images").join(set)).expect("list");
        let names: Vec<String> = files
            .iter()
            .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
            .collect();
        let want_names: Vec<String> =
            serde_json::from_value(reference[set]["files"].clone()).expect("names");
        assert_eq!(names, want_names, "pytorch-fid's file order");
        let got = net.features(&files).expect("features");
        let (shape, want) = read_f64(&fixtures().join(format!("features_{set}.npy")));
        assert_eq!(shape, [files.len(), fid::DIMS]);
        // JPEG is decoded by the `image` crate (zune-jpeg), PIL uses libjpeg-turbo: some pixels
        // differ by one level, so JPEG files get their own, looser bound.
        let mut worst = [(0.0f64, 0usize); 2];
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let jpeg = usize::from(names[i / fid::DIMS].ends_with(".jpg"));
            let d = (f64::from(*g) - w).abs();
            if d > worst[jpeg].0 {
                worst[jpeg] = (d, i);
            }
        }
        let has_jpeg = names.iter().any(|n| n.ends_with(".jpg"));
        // With libjpeg-turbo (feature `turbojpeg`) the JPEG pixels are PIL's: the same bound.
        let jpeg_bound = if cfg!(feature = "turbojpeg") {
            1e-4
        } else {
            1e-3
        };
        for (kind, (diff, i), bound) in
            [("lossless", worst[0], 1e-4), ("JPEG", worst[1], jpeg_bound)]
        {
            if kind == "JPEG" && !has_jpeg {
                continue;
            }
            eprintln!(
                "set {set}, {kind} images: max |cm3 - pytorch-fid| = {diff:.3e} (image {}, feature {})",
                names[i / fid::DIMS],
                i % fid::DIMS
            );
            assert!(
                diff < bound,
                "set {set}: {kind} features differ by {diff:.3e}"
            );
        }
        // The fixture is only a test if its features vary between images.
        let spread = fid::statistics(&got, fid::DIMS).expect("stats");
        let mean_var = (0..fid::DIMS)
            .map(|i| spread.sigma[i * fid::DIMS + i])
            .sum::<f64>()
            / fid::DIMS as f64;
        assert!(mean_var > 1e-3, "features barely vary: {mean_var}");
    }
}

#[test]
fn fid_of_dirs_equals_pytorch_fid() {
    let Some(()) = runtime("fid_of_dirs_equals_pytorch_fid") else {
        return;
    };
    let images = fixtures().join("images");
    let report =
        fid::fid_of_dirs(&model(), &images.join("a"), &images.join("b"), 5, 2).expect("fid");
    let want = reference()["fid"].as_f64().expect("fid");
    let rel = (report.fid - want).abs() / want.abs();
    eprintln!(
        "FID cm3 {} vs pytorch-fid {want}: relative difference {rel:.3e}",
        report.fid
    );
    assert!(rel < 1e-3, "FID {} vs {want}", report.fid);
    assert_eq!((report.images_a, report.images_b), (6, 6));
    let json = report.to_json();
    assert_eq!(json["FID"].as_f64(), Some(report.fid));
    assert_eq!(json["images_a"].as_u64(), Some(6));
    assert!(report.table().starts_with("FID: "), "{}", report.table());
}

fn frechet_stats(case: &str, which: &str) -> Stats {
    let dir = fixtures().join("frechet");
    let (_, mu) = read_f64(&dir.join(format!("{case}_mu{which}.npy")));
    let (shape, sigma) = read_f64(&dir.join(format!("{case}_sigma{which}.npy")));
    assert_eq!(shape, [mu.len(), mu.len()]);
    Stats {
        dim: mu.len(),
        count: 0,
        mu,
        sigma,
    }
}

#[test]
fn frechet_distance_equals_scipy() {
    let path = fixtures().join("frechet/expected.json");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("expected.json"))
            .expect("json");
    for case in ["full_rank", "singular"] {
        let (a, b) = (frechet_stats(case, "1"), frechet_stats(case, "2"));
        let got = fid::frechet_distance(&a, &b).expect("distance");
        let want = expected[case].as_f64().expect("number");
        let rel = (got - want).abs() / want;
        eprintln!("{case}: cm3 {got} vs scipy {want}, relative {rel:.3e}");
        // scipy's sqrtm of a singular product is itself only accurate to ~1e-8 here.
        let bound = if case == "singular" { 1e-6 } else { 1e-9 };
        assert!(rel < bound, "{case}: {got} vs {want}");
    }
    // d(a, a) = 0 and the distance is symmetric.
    let (a, b) = (
        frechet_stats("full_rank", "1"),
        frechet_stats("full_rank", "2"),
    );
    assert!(fid::frechet_distance(&a, &a).expect("self").abs() < 1e-9);
    let (ab, ba) = (
        fid::frechet_distance(&a, &b).expect("ab"),
        fid::frechet_distance(&b, &a).expect("ba"),
    );
    assert!((ab - ba).abs() < 1e-9 * ab);
}

#[test]
fn frechet_distance_refuses_mismatched_or_non_finite_statistics() {
    let a = frechet_stats("full_rank", "1");
    let mut short = a.clone();
    short.dim = 2;
    short.mu.truncate(2);
    short.sigma.truncate(4);
    assert!(matches!(
        fid::frechet_distance(&a, &short),
        Err(EvalError::Input { .. })
    ));
    let mut nan = a.clone();
    nan.sigma[5] = f64::NAN;
    assert!(matches!(
        fid::frechet_distance(&a, &nan),
        Err(EvalError::Numeric(_))
    ));
}

#[test]
fn statistics_are_numpy_mean_and_cov() {
    // Three rows of two features; np.cov by hand: var = Σ (x - mean)² / (n - 1).
    let x = [1.0f32, 10.0, 2.0, 20.0, 6.0, 0.0];
    let s = fid::statistics(&x, 2).expect("stats");
    assert_eq!(s.mu, vec![3.0, 10.0]);
    assert_eq!(s.sigma, vec![7.0, -20.0, -20.0, 100.0]);
    assert!(matches!(
        fid::statistics(&x[..2], 2),
        Err(EvalError::Input { .. })
    ));
    assert!(matches!(
        fid::statistics(&x[..5], 2),
        Err(EvalError::Input { .. })
    ));
}

#[test]
fn npz_statistics_round_trip_and_read_numpy_files() {
    // Written by np.savez_compressed (pytorch-fid's save_fid_stats).
    let numpy = Stats::load_npz(&fixtures().join("frechet/full_rank_stats1.npz")).expect("npz");
    let want = frechet_stats("full_rank", "1");
    assert_eq!(
        (numpy.mu.clone(), numpy.sigma.clone()),
        (want.mu, want.sigma)
    );
    let dir = tempfile::tempdir().expect("temp");
    let path = dir.path().join("stats.npz");
    numpy.save_npz(&path).expect("save");
    assert_eq!(Stats::load_npz(&path).expect("load"), numpy);
    std::fs::write(&path, b"not a zip").expect("write");
    let err = Stats::load_npz(&path).expect_err("garbage");
    assert!(err.to_string().contains("stats.npz"), "{err}");
}

#[test]
fn a_model_of_the_wrong_width_is_refused() {
    let Some(()) = runtime("a_model_of_the_wrong_width_is_refused") else {
        return;
    };
    let path = fixtures().join("wrong_width.onnx");
    let err = InceptionFeatures::load(&path, fid::DIMS, 8, 1).expect_err("1000-d model");
    assert!(
        matches!(&err, EvalError::Model { reason, .. } if reason.contains("1000") && reason.contains("2048")),
        "{err}"
    );
    // The same model is fine when 1000 features are what the caller wants.
    let mut net = InceptionFeatures::load(&path, 1000, 8, 1).expect("1000-d");
    let out = net
        .run(vec![0.5; 2 * 3 * fid::SIZE * fid::SIZE], 2)
        .expect("run");
    assert_eq!(out.len(), 2000);
    assert!(out.iter().all(|v| (v - 0.75).abs() < 1e-6));
}

#[test]
fn image_files_are_listed_as_pytorch_fid_globs_them() {
    let dir = tempfile::tempdir().expect("temp");
    for name in [
        "b.png",
        "a.jpg",
        "c.JPG",
        ".hidden.png",
        "notes.txt",
        "z.webp",
    ] {
        std::fs::write(dir.path().join(name), b"x").expect("write");
    }
    std::fs::create_dir(dir.path().join("folder.png")).expect("mkdir");
    let names: Vec<String> = fid::image_files(dir.path())
        .expect("list")
        .iter()
        .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["a.jpg", "b.png", "z.webp"]);
    // An undecodable file is an input error naming it.
    let err = fid::load_rgb(&dir.path().join("b.png")).expect_err("not an image");
    assert!(err.to_string().contains("b.png"), "{err}");
}

#[test]
fn resizing_a_299_image_is_the_identity() {
    let img = image::RgbImage::from_fn(299, 299, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x * y) % 256) as u8])
    });
    let mut out = Vec::new();
    fid::resize_bilinear_299(&img, &mut out);
    let plane = 299 * 299;
    for (i, px) in img.pixels().enumerate() {
        for c in 0..3 {
            assert_eq!(out[c * plane + i], f32::from(px[c]) / 255.0);
        }
    }
}
