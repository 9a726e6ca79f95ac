//! The Fréchet Inception distance of pytorch-fid 0.3.0 (`python -m pytorch_fid dir_a dir_b`).
//!
//! Features are pytorch-fid's `InceptionV3([3])` pool3 activations (2048-d), run through ONNX
//! Runtime from the export of `scripts/export-inception-onnx.py` (input `images` [N,3,H,W] in
//! [0, 1], output `features` [N,2048]); statistics and the distance are computed in f64.
//!
//! What is pytorch-fid's here, step by step:
//! - files: a folder's files with the extensions pytorch-fid globs (`*.png`, `*.jpg`, ..., lower
//!   case, not recursive, no hidden files), sorted by name ([`image_files`]);
//! - pixels: decoded and converted to 8-bit RGB as PIL's `.convert('RGB')` (gray replicated,
//!   alpha dropped), then torchvision's `ToTensor` (`v / 255` in f32);
//! - resize: the network's own `F.interpolate(size=(299, 299), mode='bilinear',
//!   align_corners=False)` (no antialiasing), reproduced in f32 by [`resize_bilinear_299`] before
//!   the model so that images of any size share a batch (the exported graph's Resize of a 299x299
//!   input is the identity); `2x - 1` is inside the graph;
//! - statistics: `np.mean` and `np.cov(rowvar=False)` (divisor n - 1) of the f32 features widened
//!   to f64; the distance: `calculate_frechet_distance`, see [`frechet_distance`].
//!
//! Where clean-fid (Parmar et al.) differs: it resizes each image to 299x299 *before* the network,
//! with PIL's bicubic filter (antialiased) on the float image ("clean" resize), and turns the
//! network's own resize off; it reads images through its own loader (PNG/JPEG as uint8 RGB) and
//! defaults to the same TF-ported Inception weights but through a TorchScript model. pytorch-fid's
//! bilinear resize without antialiasing aliases when it shrinks large images, so the two give
//! different FIDs on the same folders; compare numbers only within one implementation.
//!
//! Known pixel-level differences from PIL, left as they are: JPEG is decoded by the `image` crate
//! (zune-jpeg), not libjpeg-turbo, which can differ by one level in some pixels; 16-bit images are
//! scaled to 8 bits (v / 257) where PIL clips; CMYK JPEGs are not read.
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use ort::session::Session;
use ort::value::{Tensor, TensorElementType, ValueType};
use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};

mod linalg;
mod npz;

pub use linalg::trace_sqrt_product;

/// The side pytorch-fid resizes every image to.
pub const SIZE: usize = 299;
/// Width of the pool3 features.
pub const DIMS: usize = 2048;
/// Input and output names of the exported model.
pub const INPUT: &str = "images";
pub const OUTPUT: &str = "features";
/// pytorch-fid's `IMAGE_EXTENSIONS`.
pub const IMAGE_EXTENSIONS: [&str; 9] = [
    "bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp",
];
/// Largest image side decoded (larger ones are refused before allocating).
pub const MAX_SIDE: u32 = 16_384;
/// Largest batch accepted (a batch of 299x299 RGB f32 is 1 MiB per image).
pub const MAX_BATCH: usize = 1024;
/// pytorch-fid's `eps` of `calculate_frechet_distance`.
pub const EPS: f64 = 1e-6;

/// Mean and covariance of features: pytorch-fid's `mu`, `sigma`.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    pub dim: usize,
    /// Number of feature rows they were computed from (0 when loaded from a file that lacks it).
    pub count: usize,
    pub mu: Vec<f64>,
    /// Row-major `dim` x `dim`.
    pub sigma: Vec<f64>,
}

/// The result of [`fid_of_dirs`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FidReport {
    #[serde(rename = "FID")]
    pub fid: f64,
    pub images_a: usize,
    pub images_b: usize,
    pub dims: usize,
    pub model: PathBuf,
    pub dir_a: PathBuf,
    pub dir_b: PathBuf,
}

impl FidReport {
    /// `{"FID": ..., "images_a": ..., ...}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// A small text table, pytorch-fid's `FID:` line first.
    pub fn table(&self) -> String {
        let mut out = format!("FID:  {}\n{:<4} {:>7}  folder\n", self.fid, "set", "images");
        for (set, n, dir) in [
            ("a", self.images_a, &self.dir_a),
            ("b", self.images_b, &self.dir_b),
        ] {
            out += &format!("{set:<4} {n:>7}  {}\n", dir.display());
        }
        out
    }
}

/// The image files of a folder as pytorch-fid lists them: `sorted(path.glob('*.<ext>'))` over
/// [`IMAGE_EXTENSIONS`] (case-sensitive extensions, no sub-folders, no names starting with `.`).
pub fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let io = |source| EvalError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let ext = name.rsplit_once('.').map(|(_, e)| e);
        if !name.starts_with('.')
            && ext.is_some_and(|e| IMAGE_EXTENSIONS.contains(&e))
            && path.is_file()
        {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Decode an image to 8-bit RGB, refusing sides above [`MAX_SIDE`] before allocating.
pub fn load_rgb(path: &Path) -> Result<image::RgbImage> {
    let bad = |reason: String| EvalError::input(path.display().to_string(), reason);
    // With the `turbojpeg` feature, JPEG through libjpeg-turbo as PIL decodes it: the same
    // pixels, so features match pytorch-fid's to float rounding on JPEG too.
    #[cfg(feature = "turbojpeg")]
    {
        let bytes = crate::files::read_bounded(path, crate::zero_shot::leakage::MAX_IMAGE_BYTES)?;
        if let Some(img) = cm3_embed::preprocess::decode_jpeg_like_pil(&bytes, MAX_SIDE) {
            return Ok(img.to_rgb8());
        }
    }
    let mut reader = image::ImageReader::open(path)
        .map_err(|source| EvalError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .with_guessed_format()
        .map_err(|source| EvalError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(4 * u64::from(MAX_SIDE) * u64::from(MAX_SIDE));
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| bad(format!("cannot decode image: {e}")))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(bad("empty image".into()));
    }
    Ok(img.to_rgb8())
}

/// Source indices and weights along one axis, as PyTorch's CPU `upsample_bilinear2d` computes
/// them with `align_corners=False` and an output size (no scale factor), all in f32.
fn axis_weights(input: usize, output: usize) -> Vec<(usize, usize, f32, f32)> {
    let scale = input as f32 / output as f32;
    (0..output)
        .map(|o| {
            let real = (scale * (o as f32 + 0.5) - 0.5).max(0.0);
            let i0 = (real.floor() as usize).min(input - 1);
            let l1 = (real - i0 as f32).clamp(0.0, 1.0);
            let i1 = i0 + usize::from(i0 < input - 1);
            (i0, i1, 1.0 - l1, l1)
        })
        .collect()
}

/// `ToTensor` then `F.interpolate(size=(299, 299), mode='bilinear', align_corners=False)`:
/// CHW f32 in [0, 1], appended to `out`.
pub fn resize_bilinear_299(img: &image::RgbImage, out: &mut Vec<f32>) {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let raw = img.as_raw();
    let xs = axis_weights(w, SIZE);
    let ys = axis_weights(h, SIZE);
    let mut plane = vec![0f32; w * h];
    for c in 0..3 {
        for (p, v) in plane.iter_mut().zip(raw.chunks_exact(3)) {
            *p = f32::from(v[c]) / 255.0;
        }
        for &(y0, y1, ly0, ly1) in &ys {
            let (r0, r1) = (&plane[y0 * w..(y0 + 1) * w], &plane[y1 * w..(y1 + 1) * w]);
            // Height is the outer interpolation, width the inner one, as in PyTorch's kernel.
            out.extend(xs.iter().map(|&(x0, x1, lx0, lx1)| {
                (r0[x0] * lx0 + r0[x1] * lx1) * ly0 + (r1[x0] * lx0 + r1[x1] * lx1) * ly1
            }));
        }
    }
}

/// pytorch-fid's Inception (pool3) as an ONNX model.
#[derive(Debug)]
pub struct InceptionFeatures {
    session: Session,
    path: PathBuf,
    dims: usize,
    batch: usize,
}

/// The model's declared `features` width (`None` when dynamic), after checking its signature.
fn check_signature(path: &Path, session: &Session) -> Result<Option<usize>> {
    let bad = |reason: String| EvalError::Model {
        path: path.to_path_buf(),
        reason,
    };
    let port = |outlets: &[ort::value::Outlet], name: &str, what: &str| {
        let names: Vec<&str> = outlets.iter().map(|o| o.name()).collect();
        let outlet = outlets.iter().find(|o| o.name() == name).ok_or_else(|| {
            bad(format!(
                "no {what} `{name}` (the model's {what}s are {names:?})"
            ))
        })?;
        match outlet.dtype() {
            ValueType::Tensor { ty, shape, .. } if *ty == TensorElementType::Float32 => {
                Ok(shape.to_vec())
            }
            other => Err(bad(format!(
                "{what} `{name}` is {other:?}, expected float32"
            ))),
        }
    };
    let input = port(session.inputs(), INPUT, "input")?;
    let fits = |d: i64, want: i64| d < 0 || d == want;
    if input.len() != 4 || !fits(input[1], 3) || !fits(input[2], 299) || !fits(input[3], 299) {
        return Err(bad(format!(
            "input `{INPUT}` has shape {input:?}, expected [N, 3, H, W] taking 299x299"
        )));
    }
    let output = port(session.outputs(), OUTPUT, "output")?;
    if output.len() != 2 {
        return Err(bad(format!(
            "output `{OUTPUT}` has shape {output:?}, expected [N, features]"
        )));
    }
    Ok(usize::try_from(output[1]).ok())
}

impl InceptionFeatures {
    /// Load the ONNX export; `dims` is the feature width it must produce (2048 for pool3),
    /// `threads` ONNX Runtime's intra-op threads (0: its default), `batch` images per run.
    pub fn load(model: &Path, dims: usize, batch: usize, threads: usize) -> Result<Self> {
        let bad = |reason: String| EvalError::Model {
            path: model.to_path_buf(),
            reason,
        };
        if batch == 0 || batch > MAX_BATCH {
            return Err(EvalError::input(
                "batch size",
                format!("{batch} is not in 1..={MAX_BATCH}"),
            ));
        }
        if !model.is_file() {
            return Err(bad("no such model file".into()));
        }
        let env = cm3_embed::onnx::environment()?;
        let mut builder = Session::builder(env).map_err(|e| bad(e.to_string()))?;
        if threads > 0 {
            builder = builder
                .with_intra_threads(threads)
                .map_err(|e| bad(e.to_string()))?;
        }
        let session = builder
            .commit_from_file(model)
            .map_err(|e| bad(format!("not a loadable ONNX model: {e}")))?;
        match check_signature(model, &session)? {
            Some(d) if d != dims => {
                return Err(bad(format!(
                    "output `{OUTPUT}` has {d} features per image, expected {dims}"
                )));
            }
            _ => {}
        }
        Ok(Self {
            session,
            path: model.to_path_buf(),
            dims,
            batch,
        })
    }

    pub fn dims(&self) -> usize {
        self.dims
    }

    /// Features of `n` preprocessed images (`pixels` = n x 3 x 299 x 299), row-major [n, dims].
    pub fn run(&mut self, pixels: Vec<f32>, n: usize) -> Result<Vec<f32>> {
        let bad = |reason: String| EvalError::Model {
            path: self.path.clone(),
            reason,
        };
        if pixels.len() != n * 3 * SIZE * SIZE {
            return Err(EvalError::input(
                "pixels",
                format!("{} values for {n} images", pixels.len()),
            ));
        }
        let input =
            Tensor::from_array(([n, 3, SIZE, SIZE], pixels)).map_err(|e| bad(e.to_string()))?;
        let outputs = self
            .session
            .run(ort::inputs![INPUT => input])
            .map_err(|e| bad(e.to_string()))?;
        let (shape, values) = outputs[OUTPUT]
            .try_extract_tensor::<f32>()
            .map_err(|e| bad(e.to_string()))?;
        if **shape != [n as i64, self.dims as i64] {
            return Err(bad(format!(
                "output `{OUTPUT}` has shape {:?} for {n} images, expected [{n}, {}]",
                &**shape, self.dims
            )));
        }
        Ok(values.to_vec())
    }

    /// Features of image files, row-major [images.len(), dims]. Decoding and resizing of the
    /// next batch run in a second thread while the model runs on the current one.
    pub fn features(&mut self, images: &[PathBuf]) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(images.len() * self.dims);
        let batch = self.batch;
        std::thread::scope(|scope| {
            let (tx, rx) = mpsc::sync_channel::<Result<(Vec<f32>, usize)>>(1);
            scope.spawn(move || {
                for chunk in images.chunks(batch) {
                    let mut pixels = Vec::with_capacity(chunk.len() * 3 * SIZE * SIZE);
                    let loaded = chunk.iter().try_for_each(|p| {
                        resize_bilinear_299(&load_rgb(p)?, &mut pixels);
                        Ok(())
                    });
                    let failed = loaded.is_err();
                    if tx.send(loaded.map(|()| (pixels, chunk.len()))).is_err() || failed {
                        return;
                    }
                }
            });
            for batch in rx {
                let (pixels, n) = batch?;
                out.extend(self.run(pixels, n)?);
            }
            Ok::<(), EvalError>(())
        })?;
        Ok(out)
    }
}

/// `np.mean(act, axis=0)` and `np.cov(act, rowvar=False)` of row-major [n, dim] features, in f64
/// (two passes: the mean first, then the products of centred values).
pub fn statistics(features: &[f32], dim: usize) -> Result<Stats> {
    if dim == 0 || !features.len().is_multiple_of(dim) {
        return Err(EvalError::input(
            "features",
            format!("{} values are not rows of {dim}", features.len()),
        ));
    }
    let n = features.len() / dim;
    if n < 2 {
        return Err(EvalError::input(
            "features",
            format!("{n} feature rows: a covariance needs at least 2"),
        ));
    }
    if let Some(i) = features.iter().position(|v| !v.is_finite()) {
        return Err(EvalError::Numeric(format!(
            "feature {} of image {} is {}",
            i % dim,
            i / dim,
            features[i]
        )));
    }
    let mut mu = vec![0f64; dim];
    for row in features.chunks_exact(dim) {
        for (m, v) in mu.iter_mut().zip(row) {
            *m += f64::from(*v);
        }
    }
    mu.iter_mut().for_each(|m| *m /= n as f64);
    let sigma = linalg::covariance(features, &mu, n);
    Ok(Stats {
        dim,
        count: n,
        mu,
        sigma,
    })
}

fn check_stats(s: &Stats, which: &str) -> Result<()> {
    if s.mu.len() != s.dim || s.sigma.len() != s.dim * s.dim {
        return Err(EvalError::input(
            which,
            format!(
                "mu has {} values and sigma {} for dimension {}",
                s.mu.len(),
                s.sigma.len(),
                s.dim
            ),
        ));
    }
    if s.mu.iter().chain(&s.sigma).any(|v| !v.is_finite()) {
        return Err(EvalError::Numeric(format!(
            "{which}: mu or sigma is not finite"
        )));
    }
    Ok(())
}

/// pytorch-fid's `calculate_frechet_distance`:
/// ||mu1 - mu2||² + tr(S1) + tr(S2) - 2 tr(sqrtm(S1 S2)).
///
/// tr(sqrtm(S1 S2)) is the sum of the square roots of the eigenvalues of S1 S2, which are those of
/// the symmetric positive semi-definite Lᵀ S2 L for S1 = L Lᵀ ([`trace_sqrt_product`]: pivoted
/// Cholesky, Householder tridiagonalisation, implicit QL, all f64). scipy's `sqrtm` of the
/// non-symmetric product gives the same value up to rounding when it succeeds; pytorch-fid adds
/// `eps` = 1e-6 to both diagonals only when `sqrtm` returns non-finite values, which the
/// symmetric form never does on valid covariances: to reproduce that fallback, use
/// [`frechet_distance_with_offset`].
pub fn frechet_distance(a: &Stats, b: &Stats) -> Result<f64> {
    frechet_distance_with_offset(a, b, 0.0)
}

/// [`frechet_distance`] with `offset` added to the diagonal of both covariances inside the
/// square-root term only, as pytorch-fid's retry does with `eps`.
pub fn frechet_distance_with_offset(a: &Stats, b: &Stats, offset: f64) -> Result<f64> {
    check_stats(a, "statistics a")?;
    check_stats(b, "statistics b")?;
    if a.dim != b.dim {
        return Err(EvalError::input(
            "statistics",
            format!("dimensions differ: {} and {}", a.dim, b.dim),
        ));
    }
    let d = a.dim;
    let diff: f64 = a.mu.iter().zip(&b.mu).map(|(x, y)| (x - y) * (x - y)).sum();
    let trace = |s: &[f64]| (0..d).map(|i| s[i * d + i]).sum::<f64>();
    let shifted = |s: &[f64]| {
        let mut s = s.to_vec();
        (0..d).for_each(|i| s[i * d + i] += offset);
        s
    };
    let tr_covmean = if offset == 0.0 {
        trace_sqrt_product(&a.sigma, &b.sigma, d)?
    } else {
        trace_sqrt_product(&shifted(&a.sigma), &shifted(&b.sigma), d)?
    };
    Ok(diff + trace(&a.sigma) + trace(&b.sigma) - 2.0 * tr_covmean)
}

/// FID between the images of two folders (pytorch-fid's `calculate_fid_given_paths`).
pub fn fid_of_dirs(
    model: &Path,
    dir_a: &Path,
    dir_b: &Path,
    batch: usize,
    threads: usize,
) -> Result<FidReport> {
    let mut net = InceptionFeatures::load(model, DIMS, batch, threads)?;
    let mut stats = Vec::with_capacity(2);
    for dir in [dir_a, dir_b] {
        let files = image_files(dir)?;
        if files.len() < 2 {
            return Err(EvalError::input(
                dir.display().to_string(),
                format!(
                    "{} image files ({}): FID needs at least 2",
                    files.len(),
                    IMAGE_EXTENSIONS.join(", ")
                ),
            ));
        }
        stats.push(statistics(&net.features(&files)?, DIMS)?);
    }
    Ok(FidReport {
        fid: frechet_distance(&stats[0], &stats[1])?,
        images_a: stats[0].count,
        images_b: stats[1].count,
        dims: DIMS,
        model: model.to_path_buf(),
        dir_a: dir_a.to_path_buf(),
        dir_b: dir_b.to_path_buf(),
    })
}

impl Stats {
    /// Write pytorch-fid's statistics file: an `.npz` with float64 arrays `mu` [dim] and
    /// `sigma` [dim, dim] (what `save_fid_stats` writes; `np.load` and pytorch-fid read it).
    pub fn save_npz(&self, path: &Path) -> Result<()> {
        check_stats(self, &path.display().to_string())?;
        let mu = npz::npy_f64(&[self.dim], &self.mu);
        let sigma = npz::npy_f64(&[self.dim, self.dim], &self.sigma);
        let bytes = npz::write_zip(&[("mu.npy", &mu), ("sigma.npy", &sigma)]);
        std::fs::write(path, bytes).map_err(|source| EvalError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Read `mu` and `sigma` from an `.npz` (pytorch-fid's, or numpy's `savez[_compressed]`);
    /// float32 arrays are widened. `count` is 0: the file does not say.
    pub fn load_npz(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| EvalError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let what = path.display().to_string();
        let entries = npz::read_zip(&bytes).map_err(|e| EvalError::input(&what, e))?;
        let array = |key: &str| {
            let data = entries
                .iter()
                .find(|(n, _)| n == &format!("{key}.npy"))
                .map(|(_, d)| d)
                .ok_or_else(|| EvalError::input(&what, format!("no array `{key}`")))?;
            npz::parse_f64(data).map_err(|e| EvalError::input(&what, format!("`{key}`: {e}")))
        };
        let (mu_shape, mu) = array("mu")?;
        let (sigma_shape, sigma) = array("sigma")?;
        let dim = mu.len();
        if mu_shape.len() != 1 || sigma_shape != [dim, dim] {
            return Err(EvalError::input(
                &what,
                format!(
                    "mu has shape {mu_shape:?} and sigma {sigma_shape:?}, expected [d] and [d, d]"
                ),
            ));
        }
        let stats = Self {
            dim,
            count: 0,
            mu,
            sigma,
        };
        check_stats(&stats, &what)?;
        Ok(stats)
    }
}
