//! Task sources whose images are stored inside other files: Parquet tables (bytes or Hugging
//! Face `Image` structs), WebDataset tars, and every source `cm3 ingest` reads (for
//! captioning). Their bytes are written to the build's scratch folder ([`Extractor`]) and read
//! from there like any image file; the scratch folder is removed when the build ends (the
//! image-token cache keeps their codes, so a rebuild extracts again but encodes nothing twice).
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use cm3_ingest::source::ImageData;

use crate::error::{Result, SftError};
use crate::sources::{EDITED_KEYS, INSTRUCTION_KEYS, ImageSource, SOURCE_KEYS, SourceExample};
use crate::templates::ImageSlot;

/// Largest image stored in a table or tar member.
pub const MAX_EMBEDDED_IMAGE_BYTES: u64 = 256 << 20;
/// Largest text member of a tar (instruction, caption, JSON).
const MAX_TEXT_MEMBER_BYTES: u64 = 1 << 20;

fn input(path: &Path, reason: impl Into<String>) -> SftError {
    SftError::Input {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Writes embedded images into a scratch folder, one file each.
#[derive(Debug)]
pub struct Extractor {
    dir: PathBuf,
    next: u64,
}

impl Extractor {
    /// `dir` must not exist yet (it is created on the first image).
    pub fn new(dir: PathBuf) -> Self {
        Self { dir, next: 0 }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How many images were written.
    pub fn count(&self) -> u64 {
        self.next
    }

    /// Store `bytes` (from `origin`, e.g. `edits.parquet#12/input_image`) as an image file.
    pub fn store(&mut self, origin: String, bytes: &[u8]) -> Result<ImageSource> {
        if bytes.len() as u64 > MAX_EMBEDDED_IMAGE_BYTES {
            return Err(SftError::Input {
                path: PathBuf::from(&origin),
                reason: format!(
                    "an image of {} bytes, over the {MAX_EMBEDDED_IMAGE_BYTES}-byte limit",
                    bytes.len()
                ),
            });
        }
        if self.next == 0 {
            std::fs::create_dir_all(&self.dir).map_err(|e| input(&self.dir, e.to_string()))?;
        }
        let file = self.dir.join(format!("{:010}", self.next));
        std::fs::File::create_new(&file)
            .and_then(|mut f| std::io::Write::write_all(&mut f, bytes))
            .map_err(|e| input(&file, format!("writing an extracted image: {e}")))?;
        self.next += 1;
        Ok(ImageSource::Embedded { origin, file })
    }

    /// An image cell of a table: a path (relative to `base`, never leaving it) or bytes.
    fn image(
        &mut self,
        table: &Path,
        base: &Path,
        origin: String,
        data: ImageData,
    ) -> Result<ImageSource> {
        match data {
            ImageData::Bytes(b) => self.store(origin, &b),
            ImageData::Path(p) => {
                let rel = p.strip_prefix(base).unwrap_or(&p);
                if p.is_absolute() && !p.starts_with(base)
                    || rel.components().any(|c| c.as_os_str() == "..")
                {
                    return Err(input(
                        table,
                        format!("{origin}: image path {p:?} must be inside the table's folder"),
                    ));
                }
                if !p.is_file() {
                    return Err(input(&p, format!("{origin}: no such image file")));
                }
                Ok(ImageSource::File(p))
            }
            ImageData::Skipped => Err(input(table, format!("{origin}: no image"))),
        }
    }
}

/// Captioning examples from any source `cm3 ingest` reads (a WebDataset tar or folder of tars,
/// a JSONL/CSV/Parquet table with an image and a caption column, a folder of images with
/// `.txt` captions, a COCO captions JSON): one example per caption. Records the ingest reader
/// rejects (no image, no caption, unsafe path) are left out and counted in the log.
pub fn read_ingest_captions(path: &Path, ex: &mut Extractor) -> Result<Vec<SourceExample>> {
    let specs =
        cm3_ingest::source::resolve(&[path.to_path_buf()], cm3_ingest::InputFormat::Auto, None)
            .map_err(|e| input(path, e.to_string()))?;
    let cfg = cm3_ingest::IngestConfig::default();
    let mut out = Vec::new();
    let mut failed: Option<SftError> = None;
    let mut left_out = 0u64;
    for spec in &specs {
        spec.check(&cfg)
            .map_err(|e| input(&spec.path, e.to_string()))?;
        spec.read(&cfg, &|_| true, &mut |r| {
            if r.problem.is_some() || r.captions.is_empty() {
                left_out += 1;
                return true;
            }
            let image = match r.image {
                ImageData::Path(p) if p.is_file() => ImageSource::File(p),
                ImageData::Bytes(b) => {
                    match ex.store(format!("{}#{}", spec.path.display(), r.key), &b) {
                        Ok(s) => s,
                        Err(e) => {
                            failed = Some(e);
                            return false;
                        }
                    }
                }
                _ => {
                    left_out += 1;
                    return true;
                }
            };
            for c in &r.captions {
                let caption = String::from_utf8_lossy(&c.text).trim().to_string();
                if caption.is_empty() {
                    continue;
                }
                out.push(SourceExample {
                    id: c.key.clone(),
                    fields: BTreeMap::from([("caption".to_string(), caption)]),
                    images: BTreeMap::from([(ImageSlot::Image, image.clone())]),
                });
            }
            true
        });
        if let Some(e) = failed.take() {
            return Err(e);
        }
    }
    if left_out > 0 {
        tracing::warn!(source = %path.display(), records = left_out, "records without a usable image or caption left out");
    }
    Ok(out)
}

fn present<'a>(columns: &[String], keys: &[&'a str]) -> Option<&'a str> {
    keys.iter()
        .copied()
        .find(|k| columns.iter().any(|c| c == k))
}

fn edit_example(
    id: String,
    instruction: String,
    source: ImageSource,
    edited: ImageSource,
) -> SourceExample {
    SourceExample {
        id,
        fields: BTreeMap::from([("edit_instruction".to_string(), instruction)]),
        images: BTreeMap::from([(ImageSlot::Source, source), (ImageSlot::Edited, edited)]),
    }
}

/// InstructPix2Pix triplets from a Parquet table (the release's columns `input_image`,
/// `edit_prompt`, `edited_image`, or `source_image` / `edit_instruction` / `output_image`;
/// images as bytes, Hugging Face `Image` structs or paths inside the table's folder).
pub fn read_parquet_edits(table: &Path, ex: &mut Extractor) -> Result<Vec<SourceExample>> {
    let columns = cm3_ingest::source::table::parquet_columns(table)
        .map_err(|e| input(table, e.to_string()))?;
    let need = |keys: &[&'static str], what: &str| {
        present(&columns, keys).ok_or_else(|| {
            input(
                table,
                format!("no {what} column (one of {keys:?}; the table has {columns:?})"),
            )
        })
    };
    let (src, instr, edited) = (
        need(SOURCE_KEYS, "source image")?,
        need(INSTRUCTION_KEYS, "instruction")?,
        need(EDITED_KEYS, "edited image")?,
    );
    let id_col = present(&columns, &["id", "key"]);
    let base = table.parent().unwrap_or(Path::new(".")).to_path_buf();
    let name = table.display().to_string();
    let mut out = Vec::new();
    let texts: Vec<&str> = std::iter::once(instr).chain(id_col).collect();
    cm3_ingest::source::table::read_parquet_rows(
        table,
        &[src, edited],
        &texts,
        &base,
        &mut |n, images, texts| {
            let mut images = images.into_iter();
            let (Some(Some(s)), Some(Some(e))) = (images.next(), images.next()) else {
                return Err(cm3_ingest::IngestError::input(
                    table,
                    format!("row {n}: an image is missing"),
                ));
            };
            let instruction = texts[0].clone().unwrap_or_default().trim().to_string();
            let id = texts
                .get(1)
                .cloned()
                .flatten()
                .unwrap_or_else(|| n.to_string());
            let wrap = |e: SftError| cm3_ingest::IngestError::input(table, e.to_string());
            let s = ex
                .image(table, &base, format!("{name}#{n}/{src}"), s)
                .map_err(wrap)?;
            let e = ex
                .image(table, &base, format!("{name}#{n}/{edited}"), e)
                .map_err(wrap)?;
            if instruction.is_empty() {
                return Err(cm3_ingest::IngestError::input(
                    table,
                    format!("row {n}: an empty instruction"),
                ));
            }
            out.push(edit_example(id, instruction, s, e));
            Ok(true)
        },
    )
    .map_err(|e| input(table, e.to_string()))?;
    Ok(out)
}

/// Member names of a WebDataset editing sample (`<key>.<name>.<ext>`): the source image, the
/// edited image, and the instruction (`<key>.txt`, `<key>.<instruction key>.txt`, or a key
/// of `<key>.json`).
const SOURCE_MEMBERS: &[&str] = &[
    "source",
    "source_image",
    "input",
    "input_image",
    "original_image",
];
const EDITED_MEMBERS: &[&str] = &["edited", "edited_image", "output", "output_image"];

/// The tar files of a source: the tar itself, or a folder's `.tar` files, sorted.
pub fn tars_of(path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    cm3_ingest::source::list_tars(path).map_err(|e| input(path, e.to_string()))
}

#[derive(Default)]
struct EditSample {
    key: String,
    source: Option<(String, Vec<u8>)>,
    edited: Option<(String, Vec<u8>)>,
    instruction: Option<String>,
}

/// InstructPix2Pix triplets from WebDataset tars: samples of adjacent members sharing a key,
/// `<key>.source.jpg` (or `input`, `input_image`, ...), `<key>.edited.jpg` (or `output`, ...),
/// and the instruction in `<key>.txt` or `<key>.json`.
pub fn read_tar_edits(path: &Path, ex: &mut Extractor) -> Result<Vec<SourceExample>> {
    let mut out = Vec::new();
    for tar in tars_of(path)? {
        let meta = std::fs::metadata(&tar).map_err(|e| input(&tar, e.to_string()))?;
        if !meta.is_file() {
            return Err(input(&tar, "not a regular file"));
        }
        let f = std::fs::File::open(&tar).map_err(|e| input(&tar, e.to_string()))?;
        let mut archive = tar::Archive::new(std::io::BufReader::new(f));
        let mut sample = EditSample::default();
        let entries = archive
            .entries()
            .map_err(|e| input(&tar, format!("not a tar archive: {e}")))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| input(&tar, format!("corrupt tar: {e}")))?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let base = name.rsplit('/').next().unwrap_or(&name).to_string();
            let Some(dot) = base.find('.') else { continue };
            let key = format!("{}{}", &name[..name.len() - base.len()], &base[..dot]);
            let ext = base[dot + 1..].to_ascii_lowercase();
            if key != sample.key {
                finish_sample(&tar, std::mem::take(&mut sample), ex, &mut out)?;
                sample.key = key;
            }
            let (stem, last) = match ext.rsplit_once('.') {
                Some((stem, last)) => (stem.to_string(), last.to_string()),
                None => (String::new(), ext.clone()),
            };
            let image = cm3_ingest::source::is_image_ext(&last);
            let limit = if image {
                MAX_EMBEDDED_IMAGE_BYTES
            } else {
                MAX_TEXT_MEMBER_BYTES
            };
            let size = entry.size();
            if size > limit {
                return Err(input(
                    &tar,
                    format!("member {name} declares {size} bytes, over the {limit}-byte limit"),
                ));
            }
            let mut bytes = Vec::with_capacity(size as usize);
            (&mut entry)
                .take(limit)
                .read_to_end(&mut bytes)
                .map_err(|e| input(&tar, format!("member {name}: {e}")))?;
            if image && SOURCE_MEMBERS.contains(&stem.as_str()) {
                sample.source = Some((name, bytes));
            } else if image && EDITED_MEMBERS.contains(&stem.as_str()) {
                sample.edited = Some((name, bytes));
            } else if last == "txt"
                && (stem.is_empty() || INSTRUCTION_KEYS.contains(&stem.as_str()))
            {
                sample.instruction = Some(String::from_utf8_lossy(&bytes).trim().to_string());
            } else if last == "json" && sample.instruction.is_none() {
                let v: serde_json::Value = serde_json::from_slice(&bytes)
                    .map_err(|e| input(&tar, format!("member {name}: {e}")))?;
                sample.instruction = INSTRUCTION_KEYS
                    .iter()
                    .find_map(|k| v.get(*k).and_then(|s| s.as_str()))
                    .map(|s| s.trim().to_string());
            }
        }
        finish_sample(&tar, sample, ex, &mut out)?;
    }
    Ok(out)
}

fn finish_sample(
    tar: &Path,
    s: EditSample,
    ex: &mut Extractor,
    out: &mut Vec<SourceExample>,
) -> Result<()> {
    if s.key.is_empty() {
        return Ok(());
    }
    let tar_name = tar.display().to_string();
    match (s.source, s.edited, s.instruction) {
        (Some((sn, sb)), Some((en, eb)), Some(instruction)) if !instruction.is_empty() => {
            let source = ex.store(format!("{tar_name}#{sn}"), &sb)?;
            let edited = ex.store(format!("{tar_name}#{en}"), &eb)?;
            out.push(edit_example(s.key, instruction, source, edited));
            Ok(())
        }
        (source, edited, instruction) => Err(input(
            tar,
            format!(
                "sample {}: needs a source image ({}), an edited image ({}) and an instruction \
                 (.txt or .json); has source {}, edited {}, instruction {}",
                s.key,
                SOURCE_MEMBERS.join("|"),
                EDITED_MEMBERS.join("|"),
                source.is_some(),
                edited.is_some(),
                instruction.is_some_and(|i| !i.is_empty())
            ),
        )),
    }
}
