//! Manifests: JSONL, CSV/TSV and Parquet tables with an image column (a path, relative to the
//! manifest's folder or `--image-root`, or the image bytes) and a caption column.
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type, UInt32Type, UInt64Type};
use arrow_array::{Array, ArrayRef, ArrowPrimitiveType, RecordBatch};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::config::{IngestConfig, InputFormat, ManifestColumns};
use crate::error::{IngestError, Result};
use crate::normalize::{RejectReason, Rejection};

use super::{Emit, ImageData, RawCaption, RawRecord, SourceSpec};

const IMAGE_NAMES: &[&str] = &[
    "image",
    "image_path",
    "path",
    "file",
    "file_name",
    "filename",
    "filepath",
    "jpg",
    "png",
    "img",
];
const CAPTION_NAMES: &[&str] = &["caption", "text", "TEXT", "alt", "alt_text", "description"];
const KEY_NAMES: &[&str] = &["key", "id"];
const LICENSE_NAMES: &[&str] = &["license", "LICENSE", "licence"];
const URL_NAMES: &[&str] = &["url", "URL"];
const SPLIT_NAMES: &[&str] = &["split"];

/// Resolved column names of one table.
#[derive(Debug)]
struct Columns {
    image: String,
    caption: String,
    key: Option<String>,
    license: Option<String>,
    url: Option<String>,
    split: Option<String>,
}

fn pick(configured: &Option<String>, defaults: &[&str], present: &[String]) -> Option<String> {
    match configured {
        Some(c) => present.iter().any(|p| p == c).then(|| c.clone()),
        None => defaults
            .iter()
            .find(|d| present.iter().any(|p| p == *d))
            .map(|s| s.to_string()),
    }
}

fn resolve_columns(src: &Path, cfg: &ManifestColumns, present: &[String]) -> Result<Columns> {
    let need = |what: &str, configured: &Option<String>, defaults: &[&str]| {
        pick(configured, defaults, present).ok_or_else(|| {
            let wanted = configured.clone().unwrap_or_else(|| defaults.join(", "));
            IngestError::input(
                src,
                format!(
                    "no {what} column (looked for {wanted}; columns are: {}); set it with --{what}-column",
                    present.join(", ")
                ),
            )
        })
    };
    // An optional column that was configured must exist: a typo must not silently drop licenses.
    let optional =
        |what: &str, configured: &Option<String>, defaults: &[&str]| -> Result<Option<String>> {
            match (configured, pick(configured, defaults, present)) {
                (Some(c), None) => Err(IngestError::input(
                    src,
                    format!("{what} column `{c}` not found"),
                )),
                (_, found) => Ok(found),
            }
        };
    Ok(Columns {
        image: need("image", &cfg.image, IMAGE_NAMES)?,
        caption: need("caption", &cfg.caption, CAPTION_NAMES)?,
        key: optional("key", &cfg.key, KEY_NAMES)?,
        license: optional("license", &cfg.license, LICENSE_NAMES)?,
        url: optional("url", &cfg.url, URL_NAMES)?,
        split: optional("split", &cfg.split, SPLIT_NAMES)?,
    })
}

/// One row in neutral form.
struct Row {
    key: String,
    image: Option<ImageData>,
    caption: Option<Vec<u8>>,
    license: Option<String>,
    url: Option<String>,
    split: Option<String>,
    metadata: Option<String>,
}

fn base_dir(src: &SourceSpec) -> PathBuf {
    src.image_root
        .clone()
        .unwrap_or_else(|| src.path.parent().unwrap_or(Path::new(".")).to_path_buf())
}

fn row_record(src: &SourceSpec, row: Row, cfg: &IngestConfig) -> RawRecord {
    let provenance = row.url.clone().unwrap_or_else(|| match &row.image {
        Some(ImageData::Path(p)) => p.to_string_lossy().into_owned(),
        _ => format!("{}#{}", src.path.display(), row.key),
    });
    let mut rec = RawRecord {
        key: row.key.clone(),
        image: ImageData::Skipped,
        captions: Vec::new(),
        license: row
            .license
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.trim().to_string()),
        provenance,
        split: row.split.filter(|s| !s.is_empty()),
        metadata: row.metadata,
        problem: None,
    };
    let outside = match &row.image {
        Some(ImageData::Path(full)) => {
            super::outside_refused(&base_dir(src), &full.to_string_lossy(), cfg)
        }
        _ => None,
    };
    if let Some(r) = outside {
        rec.problem = Some(r);
        return rec;
    }
    match (row.image, row.caption) {
        (Some(image), Some(caption)) => {
            rec.image = image;
            rec.captions.push(RawCaption {
                key: row.key,
                text: caption,
                alt: Vec::new(),
            });
        }
        (None, _) => {
            rec.problem = Some(Rejection::new(
                RejectReason::MissingImage,
                "row has an empty image cell",
            ))
        }
        (_, None) => {
            rec.problem = Some(Rejection::new(
                RejectReason::MissingCaption,
                "row has an empty caption cell",
            ))
        }
    }
    rec
}

fn malformed(src: &SourceSpec, key: String, detail: String) -> RawRecord {
    RawRecord::rejected(
        key.clone(),
        format!("{}#{key}", src.path.display()),
        Rejection::new(RejectReason::MalformedRecord, detail),
    )
}

/// Check before any work that the table has the columns the configuration needs, so that a wrong
/// column name is an error naming the columns, not a reject for every row.
pub fn check(src: &SourceSpec, cfg: &IngestConfig) -> Result<()> {
    let present: Vec<String> = match src.format {
        InputFormat::Csv => open_csv(src)?.2,
        InputFormat::Parquet => {
            let f = open_table(&src.path)?;
            let b = ParquetRecordBatchReaderBuilder::try_new(f)
                .map_err(|e| IngestError::input(&src.path, format!("Parquet: {e}")))?;
            b.schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect()
        }
        _ => {
            // JSONL: the keys of the first object line.
            let f = open_table(&src.path)?;
            let first = BufReader::new(f)
                .lines()
                .map_while(std::result::Result::ok)
                .find(|l| !l.trim().is_empty());
            match first.and_then(|l| serde_json::from_str::<serde_json::Value>(&l).ok()) {
                Some(serde_json::Value::Object(o)) => o.keys().cloned().collect(),
                _ => return Ok(()),
            }
        }
    };
    resolve_columns(&src.path, &cfg.columns, &present).map(|_| ())
}

pub fn read(src: &SourceSpec, cfg: &IngestConfig, emit: Emit<'_>) -> Result<()> {
    match src.format {
        InputFormat::Jsonl => read_jsonl(src, cfg, emit),
        InputFormat::Csv => read_csv(src, cfg, emit),
        _ => read_parquet(src, cfg, emit),
    }
}

fn row_key(n: u64) -> String {
    format!("{n:09}")
}

/// Longest JSONL line read (a row: a caption of at most a megabyte and its metadata).
pub const MAX_LINE_BYTES: u64 = 16 << 20;

/// Consume the rest of the current line (through its newline) without keeping it.
fn skip_line(r: &mut impl BufRead) -> std::io::Result<()> {
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        if let Some(i) = buf.iter().position(|&b| b == b'\n') {
            r.consume(i + 1);
            return Ok(());
        }
        let n = buf.len();
        r.consume(n);
    }
}

fn read_jsonl(src: &SourceSpec, cfg: &IngestConfig, emit: Emit<'_>) -> Result<()> {
    let f = open_table(&src.path)?;
    let base = base_dir(src);
    let mut reader = BufReader::new(f);
    let mut line = Vec::new();
    let mut n = 0u64;
    loop {
        line.clear();
        // A line is read up to MAX_LINE_BYTES: one without an end in sight is not held whole.
        let got = (&mut reader)
            .take(MAX_LINE_BYTES + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| IngestError::io("reading", &src.path, e))?;
        if got == 0 {
            break;
        }
        if line.len() as u64 > MAX_LINE_BYTES {
            skip_line(&mut reader).map_err(|e| IngestError::io("reading", &src.path, e))?;
            let row_no = n;
            n += 1;
            if !emit(malformed(
                src,
                row_key(row_no),
                format!("line {} is longer than {MAX_LINE_BYTES} bytes", row_no + 1),
            )) {
                return Ok(());
            }
            continue;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let row_no = n;
        n += 1;
        let value: serde_json::Value = match serde_json::from_slice(&line) {
            Ok(v @ serde_json::Value::Object(_)) => v,
            Ok(_) => {
                if !emit(malformed(
                    src,
                    row_key(row_no),
                    format!("line {} is not a JSON object", row_no + 1),
                )) {
                    return Ok(());
                }
                continue;
            }
            Err(e) => {
                if !emit(malformed(
                    src,
                    row_key(row_no),
                    format!("line {}: invalid JSON: {e}", row_no + 1),
                )) {
                    return Ok(());
                }
                continue;
            }
        };
        let present: Vec<String> = value
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        let cols = resolve_columns(&src.path, &cfg.columns, &present);
        let rec = match cols {
            Err(e) => malformed(src, row_key(row_no), e.to_string()),
            Ok(cols) => {
                let s = |c: &Option<String>| {
                    c.as_ref().and_then(|c| value.get(c)).and_then(|v| match v {
                        serde_json::Value::String(s) => Some(s.clone()),
                        serde_json::Value::Null => None,
                        other => Some(other.to_string()),
                    })
                };
                let key = s(&cols.key).unwrap_or_else(|| row_key(row_no));
                let image = value
                    .get(&cols.image)
                    .and_then(|v| v.as_str())
                    .filter(|p| !p.is_empty())
                    .map(|p| ImageData::Path(base.join(p)));
                let caption = value
                    .get(&cols.caption)
                    .and_then(|v| v.as_str())
                    .map(|c| c.as_bytes().to_vec());
                row_record(
                    src,
                    Row {
                        key,
                        image,
                        caption,
                        license: s(&cols.license),
                        url: s(&cols.url),
                        split: s(&cols.split),
                        metadata: Some(value.to_string()),
                    },
                    cfg,
                )
            }
        };
        if !emit(rec) {
            return Ok(());
        }
    }
    Ok(())
}

/// The bytes a CSV reader pulls from its file for one record (the csv crate holds a record
/// whole, however long a field is): past `limit` the read fails, so a field with no closing
/// quote or a row with no line end is never held beyond the limit. Reset after each record.
struct RecordBound<R> {
    inner: R,
    used: std::rc::Rc<std::cell::Cell<u64>>,
    limit: u64,
}

impl<R: Read> Read for RecordBound<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let used = self.used.get();
        if used >= self.limit {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "a record over {} bytes (a field without its closing quote?)",
                    self.limit
                ),
            ));
        }
        let room = usize::try_from(self.limit - used)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = self.inner.read(&mut buf[..room])?;
        self.used.set(used + n as u64);
        Ok(n)
    }
}

type CsvReader = csv::Reader<RecordBound<File>>;

/// A CSV (TSV for `.tsv`) reader, the handle that resets its record bound, and its trimmed
/// header names.
fn open_csv(
    src: &SourceSpec,
) -> Result<(CsvReader, std::rc::Rc<std::cell::Cell<u64>>, Vec<String>)> {
    let tsv = src
        .path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("tsv"));
    let used = std::rc::Rc::new(std::cell::Cell::new(0));
    let bounded = RecordBound {
        inner: open_table(&src.path)?,
        used: used.clone(),
        limit: MAX_LINE_BYTES,
    };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(if tsv { b'\t' } else { b',' })
        .flexible(true)
        .from_reader(bounded);
    let headers = reader
        .byte_headers()
        .map_err(|e| IngestError::input(&src.path, format!("reading the header row: {e}")))?
        .iter()
        .map(|h| String::from_utf8_lossy(h).trim().to_string())
        .collect();
    used.set(0);
    Ok((reader, used, headers))
}

fn read_csv(src: &SourceSpec, cfg: &IngestConfig, emit: Emit<'_>) -> Result<()> {
    let (mut reader, used, headers) = open_csv(src)?;
    let cols = resolve_columns(&src.path, &cfg.columns, &headers)?;
    let idx = |name: &Option<String>| {
        name.as_ref()
            .and_then(|n| headers.iter().position(|h| h == n))
    };
    let (ii, ci) = (
        idx(&Some(cols.image.clone())),
        idx(&Some(cols.caption.clone())),
    );
    let (ki, li, ui, si) = (
        idx(&cols.key),
        idx(&cols.license),
        idx(&cols.url),
        idx(&cols.split),
    );
    let base = base_dir(src);
    let mut record = csv::ByteRecord::new();
    let mut n = 0u64;
    loop {
        let row_no = n;
        let read = reader.read_byte_record(&mut record);
        used.set(0);
        match read {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                n += 1;
                // A malformed row does not end the file unless the reader cannot go on.
                let fatal = !matches!(
                    e.kind(),
                    csv::ErrorKind::Utf8 { .. } | csv::ErrorKind::UnequalLengths { .. }
                );
                if !emit(malformed(
                    src,
                    row_key(row_no),
                    format!("row {}: {e}", row_no + 1),
                )) || fatal
                {
                    return Ok(());
                }
                continue;
            }
        }
        n += 1;
        let cell = |i: Option<usize>| i.and_then(|i| record.get(i)).filter(|c| !c.is_empty());
        let text = |i: Option<usize>| cell(i).map(|c| String::from_utf8_lossy(c).into_owned());
        let metadata: serde_json::Map<String, serde_json::Value> = headers
            .iter()
            .zip(record.iter())
            .map(|(h, v)| {
                (
                    h.clone(),
                    serde_json::Value::String(String::from_utf8_lossy(v).into_owned()),
                )
            })
            .collect();
        let row = Row {
            key: text(ki).unwrap_or_else(|| row_key(row_no)),
            image: text(ii).map(|p| ImageData::Path(base.join(p))),
            caption: cell(ci).map(<[u8]>::to_vec),
            license: text(li),
            url: text(ui),
            split: text(si),
            metadata: Some(serde_json::Value::Object(metadata).to_string()),
        };
        if !emit(row_record(src, row, cfg)) {
            return Ok(());
        }
    }
    Ok(())
}

fn decimal<T: ArrowPrimitiveType>(col: &ArrayRef, i: usize) -> Vec<u8>
where
    T::Native: ToString,
{
    col.as_primitive::<T>().value(i).to_string().into_bytes()
}

/// A cell as bytes: strings, binaries, and Hugging Face `Image` structs (`{bytes, path}`).
fn cell_bytes(col: &ArrayRef, i: usize) -> Option<Vec<u8>> {
    if col.is_null(i) {
        return None;
    }
    match col.data_type() {
        DataType::Utf8 => Some(col.as_string::<i32>().value(i).as_bytes().to_vec()),
        DataType::LargeUtf8 => Some(col.as_string::<i64>().value(i).as_bytes().to_vec()),
        DataType::Utf8View => Some(col.as_string_view().value(i).as_bytes().to_vec()),
        DataType::Binary => Some(col.as_binary::<i32>().value(i).to_vec()),
        DataType::LargeBinary => Some(col.as_binary::<i64>().value(i).to_vec()),
        DataType::BinaryView => Some(col.as_binary_view().value(i).to_vec()),
        DataType::Int64 => Some(decimal::<Int64Type>(col, i)),
        DataType::Int32 => Some(decimal::<Int32Type>(col, i)),
        DataType::UInt64 => Some(decimal::<UInt64Type>(col, i)),
        DataType::UInt32 => Some(decimal::<UInt32Type>(col, i)),
        _ => None,
    }
}

fn cell_string(col: Option<&ArrayRef>, i: usize) -> Option<String> {
    col.and_then(|c| cell_bytes(c, i))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

fn image_cell(col: &ArrayRef, i: usize, base: &Path) -> Option<ImageData> {
    match col.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => cell_string(Some(col), i)
            .filter(|p| !p.is_empty())
            .map(|p| ImageData::Path(base.join(p))),
        DataType::Struct(_) => {
            let s = col.as_struct();
            if s.is_null(i) {
                return None;
            }
            if let Some(b) = s.column_by_name("bytes").and_then(|b| cell_bytes(b, i)) {
                return Some(ImageData::Bytes(b));
            }
            cell_string(s.column_by_name("path"), i).map(|p| ImageData::Path(base.join(p)))
        }
        _ => cell_bytes(col, i).map(ImageData::Bytes),
    }
}

/// Bytes one Arrow batch is sized to hold at most: a binary column's offsets are 32-bit, so a
/// batch over 2 GiB cannot be built (arrow-rs panics), and a batch is held whole in memory.
const BATCH_BYTES: u64 = 256 << 20;

/// Rows per batch for a Parquet file: `max_rows`, fewer when the widest row group's average
/// row (its uncompressed size over its rows) would make a batch exceed [`BATCH_BYTES`].
fn batch_rows(meta: &parquet::file::metadata::ParquetMetaData, max_rows: usize) -> usize {
    let widest = meta
        .row_groups()
        .iter()
        .filter(|g| g.num_rows() > 0)
        .map(|g| (g.total_byte_size().max(0) as u64).div_ceil(g.num_rows() as u64))
        .max()
        .unwrap_or(0);
    rows_for(widest, max_rows)
}

fn rows_for(row_bytes: u64, max_rows: usize) -> usize {
    if row_bytes == 0 {
        return max_rows;
    }
    usize::try_from(BATCH_BYTES / row_bytes)
        .unwrap_or(max_rows)
        .clamp(1, max_rows)
}

/// The next batch of `reader`, with a panic inside arrow (a batch over its 2 GiB offset limit,
/// which a single row of more than 2 GiB still makes) turned into an error naming the file.
fn next_batch(
    reader: &mut parquet::arrow::arrow_reader::ParquetRecordBatchReader,
    path: &Path,
) -> Option<Result<RecordBatch>> {
    let next = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reader.next()));
    match next {
        Ok(None) => None,
        Ok(Some(Ok(b))) => Some(Ok(b)),
        Ok(Some(Err(e))) => Some(Err(IngestError::input(path, format!("Parquet: {e}")))),
        Err(_) => Some(Err(IngestError::input(
            path,
            "Parquet: arrow could not build a batch (a value over its 2 GiB limit, or corrupt \
             data)",
        ))),
    }
}

fn read_parquet(src: &SourceSpec, cfg: &IngestConfig, emit: Emit<'_>) -> Result<()> {
    let f = open_table(&src.path)?;
    let pq =
        |e: parquet::errors::ParquetError| IngestError::input(&src.path, format!("Parquet: {e}"));
    let builder = ParquetRecordBatchReaderBuilder::try_new(f).map_err(pq)?;
    let present: Vec<String> = builder
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let cols = resolve_columns(&src.path, &cfg.columns, &present)?;
    // Small batches: rows may carry whole images.
    let rows = batch_rows(builder.metadata(), 256);
    let mut reader = builder.with_batch_size(rows).build().map_err(pq)?;
    let base = base_dir(src);
    let mut n = 0u64;
    while let Some(batch) = next_batch(&mut reader, &src.path) {
        let batch: RecordBatch = batch?;
        let col =
            |name: &Option<String>| name.as_ref().and_then(|n| batch.column_by_name(n)).cloned();
        let image = col(&Some(cols.image.clone()));
        let caption = col(&Some(cols.caption.clone()));
        let (key, license, url, split) = (
            col(&cols.key),
            col(&cols.license),
            col(&cols.url),
            col(&cols.split),
        );
        for i in 0..batch.num_rows() {
            let row_no = n;
            n += 1;
            let row = Row {
                key: cell_string(key.as_ref(), i).unwrap_or_else(|| row_key(row_no)),
                image: image.as_ref().and_then(|c| image_cell(c, i, &base)),
                caption: caption.as_ref().and_then(|c| cell_bytes(c, i)),
                license: cell_string(license.as_ref(), i),
                url: cell_string(url.as_ref(), i),
                split: cell_string(split.as_ref(), i),
                metadata: None,
            };
            if !emit(row_record(src, row, cfg)) {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The column names of a Parquet table.
pub fn parquet_columns(path: &Path) -> Result<Vec<String>> {
    let f = open_table(path)?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(f)
        .map_err(|e| IngestError::input(path, format!("Parquet: {e}")))?;
    Ok(builder
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect())
}

/// Receives row `n`'s image cells and text cells; returns false to stop.
pub type RowFn<'a> =
    dyn FnMut(u64, Vec<Option<ImageData>>, Vec<Option<String>>) -> Result<bool> + 'a;

/// Every row of a Parquet table, in order, as the cells of `images` (paths relative to `base`,
/// bytes, or Hugging Face `Image` structs) and of `texts`; a column that is absent or null gives
/// `None`. `row` returns false to stop. For readers of several images a row (editing triplets).
pub fn read_parquet_rows(
    path: &Path,
    images: &[&str],
    texts: &[&str],
    base: &Path,
    row: &mut RowFn<'_>,
) -> Result<()> {
    let f = open_table(path)?;
    let pq = |e: parquet::errors::ParquetError| IngestError::input(path, format!("Parquet: {e}"));
    // Small batches: rows may carry whole images.
    let builder = ParquetRecordBatchReaderBuilder::try_new(f).map_err(pq)?;
    let rows = batch_rows(builder.metadata(), 64);
    let mut reader = builder.with_batch_size(rows).build().map_err(pq)?;
    let mut n = 0u64;
    while let Some(batch) = next_batch(&mut reader, path) {
        let batch: RecordBatch = batch?;
        let image_cols: Vec<Option<ArrayRef>> = images
            .iter()
            .map(|c| batch.column_by_name(c).cloned())
            .collect();
        let text_cols: Vec<Option<ArrayRef>> = texts
            .iter()
            .map(|c| batch.column_by_name(c).cloned())
            .collect();
        for i in 0..batch.num_rows() {
            let imgs = image_cols
                .iter()
                .map(|c| c.as_ref().and_then(|c| image_cell(c, i, base)))
                .collect();
            let txts = text_cols
                .iter()
                .map(|c| cell_string(c.as_ref(), i))
                .collect();
            if !row(n, imgs, txts)? {
                return Ok(());
            }
            n += 1;
        }
    }
    Ok(())
}

/// A table input, which must be a regular file (a FIFO would block, a device never end).
fn open_table(path: &std::path::Path) -> Result<File> {
    let meta = std::fs::metadata(path).map_err(|e| IngestError::io("opening", path, e))?;
    if !meta.is_file() {
        return Err(IngestError::io(
            "opening",
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file (a directory, FIFO, socket or device)",
            ),
        ));
    }
    File::open(path).map_err(|e| IngestError::io("opening", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_sized_below_arrows_limit() {
        assert_eq!(rows_for(0, 256), 256);
        assert_eq!(rows_for(1 << 20, 256), 256);
        assert_eq!(rows_for(10 << 20, 256), 25);
        // A row larger than a whole batch's budget is read alone.
        assert_eq!(rows_for(3 << 30, 256), 1);
        assert!(rows_for(100 << 20, 64) as u64 * (100 << 20) <= BATCH_BYTES);
    }
}
