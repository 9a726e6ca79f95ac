//! Arrow schema of `pairs/` shards and the reject record, shared by every stage that reads them.
use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, ListBuilder, StringBuilder, UInt32Builder, UInt64Builder,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};
use crate::fsio::{AtomicFile, Written};

/// One normalised caption-image pair: a row of a `pairs/` shard.
#[derive(Debug, Clone, PartialEq)]
pub struct PairRow {
    /// [`crate::pair_id`] of `source` and `key`.
    pub id: u64,
    /// The input the pair came from (canonical path).
    pub source: String,
    /// The pair's key within its source (tar member stem, relative path, row number, COCO ids).
    pub key: String,
    /// Whitespace-normalised caption.
    pub caption: String,
    /// Further captions of the same image (COCO per-image mode), in source order.
    pub alt_captions: Vec<String>,
    /// True when the caption was not valid UTF-8 and was repaired (U+FFFD substituted).
    pub caption_repaired: bool,
    /// Encoded normalised image.
    pub image: Vec<u8>,
    /// `jpeg` or `png`.
    pub image_format: String,
    pub width: u32,
    pub height: u32,
    /// Format of the original image (`jpeg`, `png`, `webp`, `gif`, `bmp`, `tiff`).
    pub orig_format: String,
    pub orig_width: u32,
    pub orig_height: u32,
    /// SHA-256 (hex) of `image`.
    pub sha256: String,
    pub license: Option<String>,
    /// URL of the original when known, else the path it was read from.
    pub provenance: String,
    pub split: String,
    /// Source metadata kept verbatim as JSON (e.g. WebDataset `key.json`).
    pub metadata: Option<String>,
}

/// The schema of `pairs/` Parquet shards.
pub fn pairs_schema() -> SchemaRef {
    let item = Arc::new(Field::new("item", DataType::Utf8, true));
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::UInt64, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("key", DataType::Utf8, false),
        Field::new("caption", DataType::Utf8, false),
        Field::new("alt_captions", DataType::List(item), false),
        Field::new("caption_repaired", DataType::Boolean, false),
        Field::new("image", DataType::Binary, false),
        Field::new("image_format", DataType::Utf8, false),
        Field::new("width", DataType::UInt32, false),
        Field::new("height", DataType::UInt32, false),
        Field::new("orig_format", DataType::Utf8, false),
        Field::new("orig_width", DataType::UInt32, false),
        Field::new("orig_height", DataType::UInt32, false),
        Field::new("sha256", DataType::Utf8, false),
        Field::new("license", DataType::Utf8, true),
        Field::new("provenance", DataType::Utf8, false),
        Field::new("split", DataType::Utf8, false),
        Field::new("metadata", DataType::Utf8, true),
    ]))
}

/// Rows to an Arrow batch with [`pairs_schema`].
pub fn pairs_batch(rows: &[PairRow]) -> std::result::Result<RecordBatch, arrow_schema::ArrowError> {
    let n = rows.len();
    let mut id = UInt64Builder::with_capacity(n);
    let mut source = StringBuilder::new();
    let mut key = StringBuilder::new();
    let mut caption = StringBuilder::new();
    let mut alt = ListBuilder::new(StringBuilder::new());
    let mut repaired = BooleanBuilder::with_capacity(n);
    let mut image = BinaryBuilder::with_capacity(n, rows.iter().map(|r| r.image.len()).sum());
    let mut image_format = StringBuilder::new();
    let (mut width, mut height) = (
        UInt32Builder::with_capacity(n),
        UInt32Builder::with_capacity(n),
    );
    let mut orig_format = StringBuilder::new();
    let (mut ow, mut oh) = (
        UInt32Builder::with_capacity(n),
        UInt32Builder::with_capacity(n),
    );
    let mut sha = StringBuilder::new();
    let mut license = StringBuilder::new();
    let mut provenance = StringBuilder::new();
    let mut split = StringBuilder::new();
    let mut metadata = StringBuilder::new();
    for r in rows {
        id.append_value(r.id);
        source.append_value(&r.source);
        key.append_value(&r.key);
        caption.append_value(&r.caption);
        for c in &r.alt_captions {
            alt.values().append_value(c);
        }
        alt.append(true);
        repaired.append_value(r.caption_repaired);
        image.append_value(&r.image);
        image_format.append_value(&r.image_format);
        width.append_value(r.width);
        height.append_value(r.height);
        orig_format.append_value(&r.orig_format);
        ow.append_value(r.orig_width);
        oh.append_value(r.orig_height);
        sha.append_value(&r.sha256);
        license.append_option(r.license.as_deref());
        provenance.append_value(&r.provenance);
        split.append_value(&r.split);
        metadata.append_option(r.metadata.as_deref());
    }
    // `ListBuilder` makes nullable items by default, which the schema declares.
    let cols: Vec<ArrayRef> = vec![
        Arc::new(id.finish()),
        Arc::new(source.finish()),
        Arc::new(key.finish()),
        Arc::new(caption.finish()),
        Arc::new(alt.finish()),
        Arc::new(repaired.finish()),
        Arc::new(image.finish()),
        Arc::new(image_format.finish()),
        Arc::new(width.finish()),
        Arc::new(height.finish()),
        Arc::new(orig_format.finish()),
        Arc::new(ow.finish()),
        Arc::new(oh.finish()),
        Arc::new(sha.finish()),
        Arc::new(license.finish()),
        Arc::new(provenance.finish()),
        Arc::new(split.finish()),
        Arc::new(metadata.finish()),
    ];
    RecordBatch::try_new(pairs_schema(), cols)
}

/// Writer settings for shards: zstd, row groups small enough to stream (images are large).
pub fn shard_writer_properties(row_group_rows: usize) -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
        // Encoded images do not compress; zstd would only spend CPU on them.
        .set_column_compression(ColumnPath::from("image"), Compression::UNCOMPRESSED)
        .set_column_dictionary_enabled(ColumnPath::from("image"), false)
        .set_max_row_group_row_count(Some(row_group_rows.max(1)))
        .set_created_by(format!("cm3 {}", crate::TOOL_VERSION))
        .build()
}

/// Write rows as a Parquet shard atomically; returns its size and checksum.
pub fn write_pairs_shard(path: &Path, rows: &[PairRow], tag: &str) -> Result<Written> {
    // Slices of 256 rows so the encoder never holds more than one row group of images twice.
    write_shard_atomic(
        path,
        tag,
        pairs_schema(),
        rows,
        256,
        pairs_batch,
        |source| CoreError::Arrow {
            path: path.to_path_buf(),
            source,
        },
        |source| CoreError::Parquet {
            path: path.to_path_buf(),
            source,
        },
    )
}

/// Write `rows` as a Parquet shard under a temporary name, fsync and rename it (the shard
/// writer settings, `row_group` rows per batch and row group); `arrow_err` and `pq_err` turn
/// the encoder's errors into the caller's, naming the file. Returns the size and checksum.
#[allow(clippy::too_many_arguments)]
pub fn write_shard_atomic<R, E: From<CoreError>>(
    path: &Path,
    tag: &str,
    schema: SchemaRef,
    rows: &[R],
    row_group: usize,
    batch: impl Fn(&[R]) -> std::result::Result<RecordBatch, ArrowError>,
    arrow_err: impl Fn(ArrowError) -> E,
    pq_err: impl Fn(ParquetError) -> E,
) -> std::result::Result<Written, E> {
    let mut file = AtomicFile::create(path, tag)?;
    {
        let props = shard_writer_properties(row_group);
        let mut w = ArrowWriter::try_new(file.writer(), schema, Some(props)).map_err(&pq_err)?;
        for chunk in rows.chunks(row_group.max(1)) {
            w.write(&batch(chunk).map_err(&arrow_err)?)
                .map_err(&pq_err)?;
        }
        w.close().map_err(&pq_err)?;
    }
    Ok(file.commit()?)
}

/// Read chosen string/u64 columns of a shard (e.g. `sha256`, `caption`, `id` for dedupe), without
/// reading the image column.
pub fn read_columns(path: &Path, columns: &[&str]) -> Result<Vec<RecordBatch>> {
    let pq_err = |source| CoreError::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let f = File::open(path).map_err(|e| CoreError::io("opening", path, e))?;
    let b = ParquetRecordBatchReaderBuilder::try_new(f).map_err(pq_err)?;
    // Match top-level (root) columns, so nested ones such as `alt_captions` can be read too.
    let fields = b.schema().fields().clone();
    let idx: Vec<usize> = columns
        .iter()
        .map(|c| {
            fields
                .iter()
                .position(|f| f.name() == c)
                .ok_or_else(|| CoreError::Merge {
                    path: path.to_path_buf(),
                    reason: format!("shard has no column `{c}`"),
                })
        })
        .collect::<Result<_>>()?;
    let mask = parquet::arrow::ProjectionMask::roots(b.parquet_schema(), idx);
    let reader = b.with_projection(mask).build().map_err(pq_err)?;
    reader
        .map(|r| {
            r.map_err(|source| CoreError::Arrow {
                path: path.to_path_buf(),
                source,
            })
        })
        .collect()
}

/// Convenience for tests and tools: number of rows in a batch list.
pub fn total_rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

/// An input that did not become a row: one JSON line of a `rejects/*.jsonl` file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RejectRecord {
    pub source: String,
    pub key: String,
    /// Machine-readable reason code, e.g. `corrupt-image`, `duplicate`.
    pub reason: String,
    /// Human-readable detail, e.g. the decoder's message or `duplicate-of <id>`.
    pub detail: String,
    /// For duplicates: the id of the row that was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<u64>,
}

/// Counts by reason code.
pub fn count_reasons(rejects: &[RejectRecord]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for r in rejects {
        *m.entry(r.reason.clone()).or_default() += 1;
    }
    m
}

/// Downcast helper for reading shard columns.
pub fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Option<&'a T> {
    batch.column_by_name(name)?.as_any().downcast_ref::<T>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{StringArray, UInt64Array};

    fn row(i: u64) -> PairRow {
        PairRow {
            id: i,
            source: "s".into(),
            key: format!("k{i}"),
            caption: format!("caption {i}"),
            alt_captions: vec!["alt".into()],
            caption_repaired: false,
            image: vec![i as u8; 10],
            image_format: "jpeg".into(),
            width: 256,
            height: 256,
            orig_format: "png".into(),
            orig_width: 640,
            orig_height: 480,
            sha256: format!("{i:064x}"),
            license: i.is_multiple_of(2).then(|| "CC-BY-2.0".into()),
            provenance: "p".into(),
            split: "train".into(),
            metadata: None,
        }
    }

    #[test]
    fn shard_roundtrip_reads_back_columns() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| CoreError::io("tempdir", "/tmp", e))?;
        let path = dir.path().join("x.parquet");
        let rows: Vec<_> = (0..600).map(row).collect();
        let w = write_pairs_shard(&path, &rows, "t")?;
        assert_eq!(crate::fsio::sha256_file(&path)?, w);
        let batches = read_columns(&path, &["id", "sha256"])?;
        assert_eq!(total_rows(&batches), 600);
        let ids: Vec<u64> = batches
            .iter()
            .flat_map(|b| {
                column::<UInt64Array>(b, "id")
                    .map(|a| a.values().to_vec())
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(ids, (0..600).collect::<Vec<_>>());
        let sha = column::<StringArray>(&batches[0], "sha256").map(|a| a.value(3).to_string());
        assert_eq!(sha, Some(format!("{:064x}", 3)));
        // Writing the same rows again gives the same bytes (re-runs are byte-identical).
        let path2 = dir.path().join("y.parquet");
        assert_eq!(write_pairs_shard(&path2, &rows, "t")?.sha256, w.sha256);
        Ok(())
    }
}
