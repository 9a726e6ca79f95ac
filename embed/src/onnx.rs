//! CLIP encoders through ONNX Runtime (`ort`, loading `libonnxruntime.so` at run time).
//!
//! The library is found, in order: `ORT_DYLIB_PATH`; the project's own install
//! (`$CM3_ORT_DIR`, default `~/.cache/cm3-ort/onnxruntime-1.31.1`, made by
//! `scripts/setup-onnxruntime.sh`); the `onnxruntime` Python package of `python3`. `ort` panics when
//! the library is missing, so it is looked for first and a missing one is a clear error.
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::Session;
use ort::value::{Tensor, TensorElementType, ValueType};

use crate::error::{EmbedError, Result};

/// The ONNX Runtime version the project installs and tests with.
pub const ONNXRUNTIME_VERSION: &str = "1.31.1";
/// Embedding width of CLIP ViT-B/32.
pub const EMBED_DIM: usize = 512;

fn default_ort_dir() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache/cm3-ort")
        .join(format!("onnxruntime-{ONNXRUNTIME_VERSION}"))
}

/// `libonnxruntime.so*` inside an `onnxruntime` package folder (`capi/`), the versioned name first.
fn library_in(package: &Path) -> Option<PathBuf> {
    let capi = package.join("capi");
    let exact = capi.join(format!("libonnxruntime.so.{ONNXRUNTIME_VERSION}"));
    if exact.is_file() {
        return Some(exact);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(&capi)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libonnxruntime.so"))
        })
        .collect();
    found.sort();
    found.pop()
}

/// The folder of `python3`'s `onnxruntime` package, if it has one. Importing a package runs its
/// code, so the current directory (where cm3 was started: a dataset, a download folder) must not
/// be on `sys.path`: Python runs from `/`, with `PYTHONSAFEPATH` (3.11+) and, for older Pythons,
/// the script's own removal of the `''` entry. `-I` is not used: it would also drop `PYTHONPATH`
/// and user site-packages, where a user may have installed onnxruntime on purpose.
fn python_onnxruntime() -> Option<PathBuf> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys; sys.path[:] = [p for p in sys.path if p not in ('', '.')]; \
             import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))",
        ])
        .env("PYTHONSAFEPATH", "1")
        .current_dir("/")
        .output()
        .ok()
        .filter(|out| out.status.success())?;
    let pkg = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    // A relative answer could only be relative to a directory we chose not to trust.
    pkg.is_absolute().then_some(pkg)
}

/// Where `libonnxruntime.so` is, or an error that says what to run.
pub fn find_onnxruntime() -> Result<PathBuf> {
    let mut tried = Vec::new();
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        tried.push(format!("ORT_DYLIB_PATH={} (no such file)", p.display()));
    }
    let dir = std::env::var_os("CM3_ORT_DIR").map_or_else(default_ort_dir, PathBuf::from);
    if let Some(p) = library_in(&dir.join("onnxruntime")) {
        return Ok(p);
    }
    tried.push(format!("{}/onnxruntime/capi", dir.display()));
    match python_onnxruntime() {
        Some(pkg) => {
            if let Some(p) = library_in(&pkg) {
                return Ok(p);
            }
            tried.push(format!("{}/capi", pkg.display()));
        }
        None => tried.push("python3 -c 'import onnxruntime' (not installed)".into()),
    }
    Err(EmbedError::Runtime(format!(
        "ONNX Runtime (libonnxruntime.so) not found; looked at: {}.\nInstall it with `scripts/setup-onnxruntime.sh` \
         (runs `python3 -m pip install --target {} onnxruntime=={ONNXRUNTIME_VERSION}`), or set ORT_DYLIB_PATH to the library.",
        tried.join("; "),
        default_ort_dir().display()
    )))
}

/// The process's ONNX Runtime environment, loaded once.
pub fn environment() -> Result<&'static Environment> {
    static ENV: OnceLock<std::result::Result<Environment, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let lib = find_onnxruntime().map_err(|e| e.to_string())?;
        let builder =
            ort::init_from(&lib).map_err(|e| format!("loading {}: {e}", lib.display()))?;
        builder
            .with_name("cm3")
            .build()
            .map_err(|e| format!("starting ONNX Runtime from {}: {e}", lib.display()))
    })
    .as_ref()
    .map_err(|e| EmbedError::Runtime(e.clone()))
}

/// `model.onnx` inside a folder in the Hugging Face layout, or the file itself.
pub fn model_path(model: &Path) -> PathBuf {
    if model.is_dir() {
        model.join("model.onnx")
    } else {
        model.to_path_buf()
    }
}

/// One expected input or output: name, element type, and dims (`None` = any size).
struct Port {
    name: &'static str,
    ty: TensorElementType,
    dims: &'static [Option<i64>],
}

const VISION_INPUTS: &[Port] = &[Port {
    name: "pixel_values",
    ty: TensorElementType::Float32,
    dims: &[None, Some(3), Some(224), Some(224)],
}];
const VISION_OUTPUTS: &[Port] = &[Port {
    name: "image_embeds",
    ty: TensorElementType::Float32,
    dims: &[None, Some(EMBED_DIM as i64)],
}];
const TEXT_INPUTS: &[Port] = &[
    Port {
        name: "input_ids",
        ty: TensorElementType::Int64,
        dims: &[None, Some(77)],
    },
    Port {
        name: "attention_mask",
        ty: TensorElementType::Int64,
        dims: &[None, Some(77)],
    },
];
const TEXT_OUTPUTS: &[Port] = &[Port {
    name: "text_embeds",
    ty: TensorElementType::Float32,
    dims: &[None, Some(EMBED_DIM as i64)],
}];

fn check_ports(path: &Path, what: &str, have: &[ort::value::Outlet], want: &[Port]) -> Result<()> {
    let bad = |reason: String| EmbedError::Model {
        path: path.to_path_buf(),
        reason,
    };
    let names: Vec<&str> = have.iter().map(|o| o.name()).collect();
    for port in want {
        let Some(outlet) = have.iter().find(|o| o.name() == port.name) else {
            return Err(bad(format!(
                "no {what} `{}` (the model's {what}s are {names:?})",
                port.name
            )));
        };
        let ValueType::Tensor { ty, shape, .. } = outlet.dtype() else {
            return Err(bad(format!("{what} `{}` is not a tensor", port.name)));
        };
        let fits = *ty == port.ty
            && shape.len() == port.dims.len()
            && shape
                .iter()
                .zip(port.dims)
                .all(|(&d, want)| d < 0 || want.is_none_or(|w| w == d));
        if !fits {
            let want_dims: Vec<String> = port
                .dims
                .iter()
                .map(|d| d.map_or("N".into(), |v| v.to_string()))
                .collect();
            return Err(bad(format!(
                "{what} `{}` is {ty:?} {:?}, expected {:?} [{}]",
                port.name,
                &**shape,
                port.ty,
                want_dims.join(", ")
            )));
        }
    }
    Ok(())
}

fn open(
    path: &Path,
    threads: usize,
    spinning: bool,
    inputs: &[Port],
    outputs: &[Port],
) -> Result<Session> {
    let env = environment()?;
    let bad = |reason: String| EmbedError::Model {
        path: path.to_path_buf(),
        reason,
    };
    if !path.is_file() {
        return Err(bad("no such model file".into()));
    }
    let mut builder = Session::builder(env).map_err(|e| bad(e.to_string()))?;
    if threads > 0 {
        builder = builder
            .with_intra_threads(threads)
            .map_err(|e| bad(e.to_string()))?;
    }
    if !spinning {
        builder = builder
            .with_intra_op_spinning(false)
            .map_err(|e| bad(e.to_string()))?
            .with_inter_op_spinning(false)
            .map_err(|e| bad(e.to_string()))?;
    }
    let session = builder
        .commit_from_file(path)
        .map_err(|e| bad(format!("not a loadable ONNX model: {e}")))?;
    check_ports(path, "input", session.inputs(), inputs)?;
    check_ports(path, "output", session.outputs(), outputs)?;
    Ok(session)
}

/// The width an output declares (its last axis), when fixed.
fn declared_width(session: &Session, output: &str) -> Option<usize> {
    session
        .outputs()
        .iter()
        .find(|o| o.name() == output)
        .and_then(|o| match o.dtype() {
            ValueType::Tensor { shape, .. } => shape.last().and_then(|&d| usize::try_from(d).ok()),
            _ => None,
        })
}

/// An output checked against what the model declared and the batch it was given: [n, width],
/// the same width as declared when the model fixes it, every value present. A model that says
/// one shape and returns another must not write embeddings whose header disagrees with them.
fn checked_output(
    path: &Path,
    name: &str,
    shape: &[i64],
    values: &[f32],
    n: usize,
    declared: Option<usize>,
) -> Result<Vec<f32>> {
    let width = match shape {
        [rows, width] if *rows == n as i64 && *width > 0 => *width as usize,
        _ => 0,
    };
    if width == 0 || declared.is_some_and(|d| d != width) || values.len() != n * width {
        return Err(EmbedError::Model {
            path: path.to_path_buf(),
            reason: format!(
                "output `{name}` is {shape:?} ({} values) for {n} inputs; it declares [N, {}]",
                values.len(),
                declared.map_or("?".to_string(), |d| d.to_string())
            ),
        });
    }
    Ok(values.to_vec())
}

/// The CLIP image encoder: `pixel_values` [N,3,224,224] -> `image_embeds` [N,512].
#[derive(Debug)]
pub struct VisionEncoder {
    session: Session,
    path: PathBuf,
    width: Option<usize>,
}

impl VisionEncoder {
    /// Load `model.onnx` (a file, or a folder in the Hugging Face layout) and check its signature.
    pub fn load(model: &Path, threads: usize) -> Result<Self> {
        let path = model_path(model);
        let session = open(&path, threads, true, VISION_INPUTS, VISION_OUTPUTS)?;
        Ok(Self {
            width: declared_width(&session, "image_embeds"),
            session,
            path,
        })
    }

    /// Raw (not normalised) embeddings of `n` preprocessed images, row-major [n, 512].
    pub fn embed(&mut self, pixels: Vec<f32>, n: usize) -> Result<Vec<f32>> {
        let err = |e: ort::Error| EmbedError::Model {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        if pixels.len() != n * 3 * 224 * 224 {
            return Err(EmbedError::Shape(format!(
                "{} pixel values for {n} images",
                pixels.len()
            )));
        }
        let input = Tensor::from_array(([n, 3, 224, 224], pixels)).map_err(err)?;
        let outputs = self
            .session
            .run(ort::inputs!["pixel_values" => input])
            .map_err(err)?;
        let (shape, values) = outputs["image_embeds"]
            .try_extract_tensor::<f32>()
            .map_err(err)?;
        checked_output(&self.path, "image_embeds", shape, values, n, self.width)
    }
}

/// The CLIP text encoder: `input_ids`, `attention_mask` [N,77] -> `text_embeds` [N,512].
///
/// When the model's sequence axis is dynamic (as in Hugging Face exports), each batch is cut to its
/// longest row instead of 77 positions: CLIP's text tower attends causally and reads the state of
/// the end token, and the attention mask hides padding, so the padding after the end token never
/// changes the output, while a caption of 15 tokens costs a fifth of 77.
#[derive(Debug)]
pub struct TextEncoder {
    session: Session,
    path: PathBuf,
    trim: bool,
    width: Option<usize>,
}

impl TextEncoder {
    pub fn load(model: &Path, threads: usize) -> Result<Self> {
        Self::load_with(model, threads, true)
    }

    /// Like [`Self::load`]; with `spinning` false, ONNX Runtime's idle threads sleep instead of
    /// busy-waiting for the next batch, which is right when other work (searches) shares the cores.
    pub fn load_with(model: &Path, threads: usize, spinning: bool) -> Result<Self> {
        let path = model_path(model);
        let session = open(&path, threads, spinning, TEXT_INPUTS, TEXT_OUTPUTS)?;
        let trim = session
            .inputs()
            .iter()
            .filter(|o| o.name() == "input_ids" || o.name() == "attention_mask")
            .all(|o| match o.dtype() {
                ValueType::Tensor { shape, .. } => shape.get(1).is_some_and(|&d| d < 0),
                _ => false,
            });
        Ok(Self {
            width: declared_width(&session, "text_embeds"),
            session,
            path,
            trim,
        })
    }

    /// Whether batches are cut to their longest row (the model's sequence axis is dynamic).
    pub fn trims_padding(&self) -> bool {
        self.trim
    }

    /// Like [`Self::embed`], always with all 77 positions (to compare against).
    pub fn embed_full_length(&mut self, ids: &[u32], n: usize) -> Result<Vec<f32>> {
        let trim = std::mem::replace(&mut self.trim, false);
        let out = self.embed(ids, n);
        self.trim = trim;
        out
    }

    /// Raw (not normalised) embeddings of `n` token rows of 77 ids; the attention mask is 1 on
    /// non-padding ids (start, BPE ids, end), as Hugging Face's CLIP tokenizer makes it.
    pub fn embed(&mut self, ids: &[u32], n: usize) -> Result<Vec<f32>> {
        let err = |e: ort::Error| EmbedError::Model {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        if ids.len() != n * 77 {
            return Err(EmbedError::Shape(format!(
                "{} token ids for {n} rows of 77",
                ids.len()
            )));
        }
        // The longest row's length: its end token is its last non-zero id.
        let len = if self.trim {
            ids.chunks_exact(77)
                .map(|r| r.iter().rposition(|&t| t != 0).map_or(1, |p| p + 1))
                .max()
                .unwrap_or(1)
        } else {
            77
        };
        let kept = || ids.chunks_exact(77).flat_map(|r| &r[..len]);
        let input_ids: Vec<i64> = kept().map(|&i| i64::from(i)).collect();
        let mask: Vec<i64> = kept().map(|&i| i64::from(i != 0)).collect();
        let input_ids = Tensor::from_array(([n, len], input_ids)).map_err(err)?;
        let mask = Tensor::from_array(([n, len], mask)).map_err(err)?;
        let outputs = self
            .session
            .run(ort::inputs!["input_ids" => input_ids, "attention_mask" => mask])
            .map_err(err)?;
        let (shape, values) = outputs["text_embeds"]
            .try_extract_tensor::<f32>()
            .map_err(err)?;
        checked_output(&self.path, "text_embeds", shape, values, n, self.width)
    }
}

/// L2-normalise each row of a row-major [n, dim] matrix in place (zero rows stay zero).
pub fn normalize_rows(values: &mut [f32], dim: usize) {
    for row in values.chunks_exact_mut(dim) {
        let norm = row
            .iter()
            .map(|v| f64::from(*v) * f64::from(*v))
            .sum::<f64>()
            .sqrt();
        if norm > 0.0 {
            row.iter_mut()
                .for_each(|v| *v = (f64::from(*v) / norm) as f32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a model returns is checked against what it declared and the batch it was given,
    /// before any embedding is written.
    #[test]
    fn outputs_that_disagree_with_the_declared_shape_are_refused() {
        let p = Path::new("m.onnx");
        let ok = checked_output(p, "image_embeds", &[2, 4], &[0.0; 8], 2, Some(4));
        assert_eq!(ok.expect("fits").len(), 8);
        // A dynamic width takes what comes, as long as it is consistent.
        assert!(checked_output(p, "image_embeds", &[2, 3], &[0.0; 6], 2, None).is_ok());
        for (shape, values, n, declared) in [
            (vec![2, 256], 512, 2, Some(512)), // narrower than declared
            (vec![3, 4], 12, 2, Some(4)),      // other batch size
            (vec![2, 4], 7, 2, Some(4)),       // values missing
            (vec![8], 8, 2, None),             // not a matrix
        ] {
            let err = checked_output(p, "image_embeds", &shape, &vec![0.0; values], n, declared)
                .expect_err("refused");
            let msg = err.to_string();
            assert!(
                msg.contains("m.onnx") && msg.contains("image_embeds"),
                "{msg}"
            );
        }
    }
}
