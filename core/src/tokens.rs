//! `tokens/<shard>.parquet`: per pair its text ids and image ids, in the dataset's vocabulary
//! (written by `cm3 tokenize`, read by `cm3 pack`).

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use crate::fsio::Written;
use arrow_array::builder::{ListBuilder, UInt32Builder, UInt64Builder};
use arrow_array::{Array, ArrayRef, ListArray, RecordBatch, UInt32Array, UInt64Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{CoreError, Result};

/// One tokenised pair. Ids are in the vocabulary layout (`tokenizer/vocab.json`): image ids are
/// the VQ codes plus the layout's image offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub id: u64,
    pub text: Vec<u32>,
    pub image: Vec<u32>,
}

pub fn schema() -> SchemaRef {
    let list = |name: &str| {
        Field::new(
            name,
            DataType::List(Arc::new(Field::new("item", DataType::UInt32, false))),
            false,
        )
    };
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::UInt64, false),
        list("text"),
        list("image"),
    ]))
}

fn pq_err(path: &Path, e: impl std::fmt::Display) -> CoreError {
    CoreError::Shard {
        path: path.to_path_buf(),
        reason: format!("tokens shard: {e}"),
    }
}

fn batch(rows: &[TokenRow]) -> std::result::Result<RecordBatch, arrow_schema::ArrowError> {
    let s = schema();
    let item = Arc::new(Field::new("item", DataType::UInt32, false));
    let mut id = UInt64Builder::with_capacity(rows.len());
    let mut text = ListBuilder::new(UInt32Builder::new()).with_field(item.clone());
    let mut image = ListBuilder::new(UInt32Builder::new()).with_field(item);
    for r in rows {
        id.append_value(r.id);
        text.values().append_slice(&r.text);
        text.append(true);
        image.values().append_slice(&r.image);
        image.append(true);
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(id.finish()),
        Arc::new(text.finish()),
        Arc::new(image.finish()),
    ];
    RecordBatch::try_new(s, cols)
}

/// Written atomically (temporary name, fsync, rename).
pub fn write_shard(path: &Path, rows: &[TokenRow], tag: &str) -> Result<Written> {
    crate::schema::write_shard_atomic(
        path,
        tag,
        schema(),
        rows,
        4_096,
        batch,
        |e| pq_err(path, e),
        |e| pq_err(path, e),
    )
}

pub fn read_shard(path: &Path) -> Result<Vec<TokenRow>> {
    let f = File::open(path).map_err(|e| CoreError::io("opening", path, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(f)
        .and_then(|b| b.build())
        .map_err(|e| pq_err(path, e))?;
    let mut out = Vec::new();
    for b in reader {
        let b = b.map_err(|e| pq_err(path, e))?;
        let bad = || pq_err(path, "columns id/text/image have unexpected types");
        let id = b
            .column_by_name("id")
            .and_then(|c| c.as_any().downcast_ref::<UInt64Array>())
            .ok_or_else(bad)?;
        let list = |name: &str| {
            b.column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<ListArray>())
                .cloned()
        };
        let (text, image) = (
            list("text").ok_or_else(bad)?,
            list("image").ok_or_else(bad)?,
        );
        let ids = |l: &ListArray, i: usize| -> Option<Vec<u32>> {
            let v = l.value(i);
            v.as_any()
                .downcast_ref::<UInt32Array>()
                .map(|a| a.values().to_vec())
        };
        for i in 0..b.num_rows() {
            out.push(TokenRow {
                id: id.value(i),
                text: ids(&text, i).ok_or_else(bad)?,
                image: ids(&image, i).ok_or_else(bad)?,
            });
        }
    }
    Ok(out)
}
