//! The zero-shot protocols that produce what the metrics score (paper §3, Tables 1 and 2):
//! text → image on COCO captions (N samples a prompt, CD-K and CFG mixed, CLIP re-ranking,
//! retrieved documents from the run's memory bank, then FID and CLIP score), image → text through
//! the CM3 infill prompt (then the caption metrics), and VQA in Table 5's prompt form (then VQA
//! accuracy). Each writes its samples, a JSON report recording every setting, the checkpoint, the
//! bank and the leakage check, and continues where an interrupted run stopped.
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::tensor::Device;
use cm3_generate::{Generator, Guidance, Sampling, Settings};
use cm3_tokenize::ImageTokenizer;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use leakage::{LeakageGuard, LeakageReport};

use crate::error::{EvalError, Result};

pub mod i2t;
pub mod leakage;
pub mod t2i;
pub mod vqa;

/// Most records read from an evaluation's own progress log.
const MAX_PROGRESS_BYTES: u64 = 1 << 30;
/// Largest annotation file read whole.
pub const MAX_JSON_BYTES: u64 = 2 << 30;

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> EvalError + '_ {
    move |source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A JSON file, bounded in size, parsed into `T`.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    crate::files::read_json(path, MAX_JSON_BYTES)
}

pub use cm3_sft::sources::numeric_id;

/// The images of a folder as pytorch-fid lists them (not recursive, sorted by file name):
/// (id, path), the id being the number the file name carries, else its stem.
pub fn images_in(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    // pytorch-fid's listing: the leakage check, the protocols and FID see the same files.
    let out: Vec<(String, PathBuf)> = crate::fid::image_files(dir)?
        .into_iter()
        .map(|path| {
            let id = match numeric_id(&path) {
                Some(n) => n.to_string(),
                None => path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or_default()
                    .to_string(),
            };
            (id, path)
        })
        .collect();
    if out.is_empty() {
        return Err(EvalError::input(
            dir.display().to_string(),
            format!(
                "no images ({}) in this folder",
                crate::fid::IMAGE_EXTENSIONS.join(", ")
            ),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (id, path) in &out {
        if !seen.insert(id.clone()) {
            return Err(EvalError::input(
                path.display().to_string(),
                format!("a second image with id {id} in the folder"),
            ));
        }
    }
    Ok(out)
}

#[derive(Debug, Deserialize)]
struct CocoImage {
    id: serde_json::Value,
    #[serde(default)]
    file_name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct CocoCaption {
    image_id: serde_json::Value,
    caption: String,
    #[serde(default)]
    id: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct CocoCaptions {
    #[serde(default)]
    images: Vec<CocoImage>,
    annotations: Vec<CocoCaption>,
}

/// An image id as text: COCO ids are numbers, other sets use strings.
pub(crate) use cm3_sft::sources::id_text;

/// A COCO captions annotation file: each image's captions (in annotation-id order) and, when the
/// file lists them, its file name.
#[derive(Debug, Clone, Default)]
pub struct CocoCaptionFile {
    pub captions: BTreeMap<String, Vec<String>>,
    pub file_names: BTreeMap<String, String>,
}

impl CocoCaptionFile {
    pub fn read(path: &Path) -> Result<Self> {
        let raw: CocoCaptions = read_json(path)?;
        let mut by_image: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
        for (i, a) in raw.annotations.into_iter().enumerate() {
            let id = id_text(&a.image_id).ok_or_else(|| {
                EvalError::input(
                    path.display().to_string(),
                    format!("annotation {i}: image_id is neither a number nor a string"),
                )
            })?;
            by_image
                .entry(id)
                .or_default()
                .push((a.id.unwrap_or(i as u64), a.caption));
        }
        let captions = by_image
            .into_iter()
            .map(|(k, mut v)| {
                v.sort_by_key(|(id, _)| *id);
                (k, v.into_iter().map(|(_, c)| c).collect())
            })
            .collect();
        let file_names = raw
            .images
            .into_iter()
            .filter_map(|im| Some((id_text(&im.id)?, im.file_name?)))
            .collect();
        Ok(Self {
            captions,
            file_names,
        })
    }
}

/// An append-only log of finished items (one JSON object a line), so that an interrupted
/// evaluation continues where it stopped. A torn last line (the process killed mid-write) is
/// dropped when read.
#[derive(Debug)]
pub(crate) struct Progress {
    path: PathBuf,
}

impl Progress {
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    /// The records written so far, rewriting the file without a torn last line.
    pub fn load<T: DeserializeOwned>(&self) -> Result<Vec<T>> {
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&self.path)(e)),
        };
        if meta.len() > MAX_PROGRESS_BYTES {
            return Err(EvalError::input(
                self.path.display().to_string(),
                "progress log over 1 GiB",
            ));
        }
        let text = std::fs::read_to_string(&self.path).map_err(io_err(&self.path))?;
        let mut out = Vec::new();
        let mut good = 0;
        for line in text.split_inclusive('\n') {
            if !line.ends_with('\n') {
                break;
            }
            match serde_json::from_str(line.trim_end()) {
                Ok(r) => out.push(r),
                Err(_) => break,
            }
            good += line.len();
        }
        if good < text.len() {
            tracing::warn!(
                path = %self.path.display(),
                "dropping a torn last record of an interrupted evaluation"
            );
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&self.path)
                .map_err(io_err(&self.path))?;
            f.set_len(good as u64).map_err(io_err(&self.path))?;
        }
        Ok(out)
    }

    pub fn append(&self, record: &serde_json::Value) -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(io_err(&self.path))?;
        let line = serde_json::to_string(record).map_err(|source| EvalError::Json {
            path: self.path.clone(),
            source,
        })? + "\n";
        f.write_all(line.as_bytes()).map_err(io_err(&self.path))?;
        f.sync_data().map_err(io_err(&self.path))
    }
}

/// The settings an output folder was started with (`settings.json`): a resumed evaluation must
/// use the same ones, or its samples would mix two protocols.
pub(crate) fn pin_settings(out: &Path, settings: &serde_json::Value) -> Result<()> {
    std::fs::create_dir_all(out).map_err(io_err(out))?;
    let path = out.join("settings.json");
    if path.exists() {
        let before: serde_json::Value = read_json(&path)?;
        if &before != settings {
            return Err(EvalError::input(
                out.display().to_string(),
                format!(
                    "holds an evaluation with other settings ({}); use another --out, or \
                     delete it to start over",
                    path.display()
                ),
            ));
        }
        return Ok(());
    }
    write_json(&path, settings)
}

/// Write `value` as pretty JSON, atomically.
pub(crate) fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|source| EvalError::Json {
        path: path.to_path_buf(),
        source,
    })? + "\n";
    cm3_core::fsio::write_atomic(path, text.as_bytes(), "eval")?;
    Ok(())
}

/// The run's generator (on the CPU backend), and the leakage check of the evaluation images
/// against its dataset, which is also its memory bank.
pub(crate) fn open_run(
    run: &Path,
    images: &[(String, PathBuf)],
    allow_overlap: bool,
) -> Result<(Generator, LeakageReport)> {
    let g = Generator::open(run, None, &Device::flex())?;
    image_tokenizer(&g, run)?;
    let leakage = LeakageGuard::for_dataset(&g.dataset)?.check(images, allow_overlap)?;
    Ok((g, leakage))
}

/// The run's image tokenizer, or an error naming the run.
pub(crate) fn image_tokenizer<'a>(g: &'a Generator, run: &Path) -> Result<&'a ImageTokenizer> {
    g.image
        .as_ref()
        .ok_or_else(|| EvalError::input(run.display().to_string(), "no image tokenizer"))
}

/// One sample without guidance, at `temperature` (0: greedy).
pub(crate) fn one_sample(temperature: f64, seed: u64) -> Settings {
    Settings {
        samples: 1,
        guidance: Guidance::None,
        sampling: Sampling {
            temperature,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
        },
        seed,
    }
}
