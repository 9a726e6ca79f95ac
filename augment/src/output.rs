//! `neighbors/<shard>.parquet`: per pair of the shard (in the order of its embeddings), the
//! retrieved documents in the order they were chosen (by image first, then by text), their
//! relevance scores, the query that found each, and which were sampled for the training example.
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Float32Builder, ListBuilder, StringBuilder, UInt32Builder, UInt64Builder,
};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Float32Array, ListArray, RecordBatch, StringArray, UInt32Array,
    UInt64Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Serialize;

use cm3_core::fsio::Written;

use crate::error::{AugmentError, Result};
use crate::select::{FoundBy, Neighbour};

/// One pair's row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NeighbourRow {
    pub id: u64,
    pub neighbours: Vec<Neighbour>,
    pub short_by_image: u32,
    pub short_by_text: u32,
    /// CLIP tokens of the caption, and how many query dropout removed from the text query.
    pub query_tokens: u32,
    pub dropped_tokens: u32,
}

pub fn schema() -> SchemaRef {
    let list = |name: &str, t: DataType| {
        Field::new(
            name,
            DataType::List(Arc::new(Field::new("item", t, false))),
            false,
        )
    };
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::UInt64, false),
        list("neighbors", DataType::UInt64),
        list("scores", DataType::Float32),
        list("found_by", DataType::Utf8),
        list("sampled", DataType::Boolean),
        Field::new("short_by_image", DataType::UInt32, false),
        Field::new("short_by_text", DataType::UInt32, false),
        Field::new("query_tokens", DataType::UInt32, false),
        Field::new("dropped_tokens", DataType::UInt32, false),
    ]))
}

fn pq_err(path: &Path, e: impl std::fmt::Display) -> AugmentError {
    AugmentError::Parquet {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn batch(rows: &[NeighbourRow]) -> std::result::Result<RecordBatch, arrow_schema::ArrowError> {
    let s = schema();
    let item = |i: usize| match s.field(i).data_type() {
        DataType::List(f) => f.clone(),
        _ => unreachable!("list columns"),
    };
    let mut id = UInt64Builder::with_capacity(rows.len());
    let mut nb = ListBuilder::new(UInt64Builder::new()).with_field(item(1));
    let mut sc = ListBuilder::new(Float32Builder::new()).with_field(item(2));
    let mut fb = ListBuilder::new(StringBuilder::new()).with_field(item(3));
    let mut sa = ListBuilder::new(BooleanBuilder::new()).with_field(item(4));
    let mut u32s: [UInt32Builder; 4] = std::array::from_fn(|_| UInt32Builder::new());
    for r in rows {
        id.append_value(r.id);
        for n in &r.neighbours {
            nb.values().append_value(n.id);
            sc.values().append_value(n.score);
            fb.values().append_value(n.found_by.name());
            sa.values().append_value(n.sampled);
        }
        nb.append(true);
        sc.append(true);
        fb.append(true);
        sa.append(true);
        for (b, v) in u32s.iter_mut().zip([
            r.short_by_image,
            r.short_by_text,
            r.query_tokens,
            r.dropped_tokens,
        ]) {
            b.append_value(v);
        }
    }
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(id.finish()),
        Arc::new(nb.finish()),
        Arc::new(sc.finish()),
        Arc::new(fb.finish()),
        Arc::new(sa.finish()),
    ];
    cols.extend(u32s.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    RecordBatch::try_new(s, cols)
}

/// Write a shard's rows atomically; returns its size and checksum.
pub fn write_shard(path: &Path, rows: &[NeighbourRow], tag: &str) -> Result<Written> {
    cm3_core::schema::write_shard_atomic(
        path,
        tag,
        schema(),
        rows,
        16_384,
        batch,
        |e| pq_err(path, e),
        |e| pq_err(path, e),
    )
}

fn col<'a, T: 'static>(b: &'a RecordBatch, name: &str, path: &Path) -> Result<&'a T> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| {
            pq_err(
                path,
                format!("column `{name}` is missing or has another type"),
            )
        })
}

/// Read a shard written by [`write_shard`].
pub fn read_shard(path: &Path) -> Result<Vec<NeighbourRow>> {
    let f = File::open(path).map_err(|e| AugmentError::io("opening", path, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(f)
        .and_then(|b| b.build())
        .map_err(|e| pq_err(path, e))?;
    let mut out = Vec::new();
    for b in reader {
        let b = b.map_err(|e| pq_err(path, e))?;
        let id = col::<UInt64Array>(&b, "id", path)?;
        let lists: Vec<&ListArray> = ["neighbors", "scores", "found_by", "sampled"]
            .iter()
            .map(|n| col::<ListArray>(&b, n, path))
            .collect::<Result<_>>()?;
        let u = |n: &str| col::<UInt32Array>(&b, n, path);
        let (si, st, qt, dt) = (
            u("short_by_image")?,
            u("short_by_text")?,
            u("query_tokens")?,
            u("dropped_tokens")?,
        );
        for i in 0..b.num_rows() {
            let nb = lists[0].value(i);
            let sc = lists[1].value(i);
            let fb = lists[2].value(i);
            let sa = lists[3].value(i);
            let (Some(nb), Some(sc), Some(fb), Some(sa)) = (
                nb.as_any().downcast_ref::<UInt64Array>(),
                sc.as_any().downcast_ref::<Float32Array>(),
                fb.as_any().downcast_ref::<StringArray>(),
                sa.as_any().downcast_ref::<BooleanArray>(),
            ) else {
                return Err(pq_err(path, "list columns have unexpected item types"));
            };
            if [sc.len(), fb.len(), sa.len()] != [nb.len(); 3] {
                return Err(pq_err(
                    path,
                    format!("row {i}: list columns differ in length"),
                ));
            }
            let neighbours = (0..nb.len())
                .map(|j| {
                    let found_by = match fb.value(j) {
                        "image" => FoundBy::Image,
                        "text" => FoundBy::Text,
                        other => {
                            return Err(pq_err(path, format!("row {i}: found_by `{other}`")));
                        }
                    };
                    Ok(Neighbour {
                        id: nb.value(j),
                        score: sc.value(j),
                        found_by,
                        sampled: sa.value(j),
                    })
                })
                .collect::<Result<_>>()?;
            out.push(NeighbourRow {
                id: id.value(i),
                neighbours,
                short_by_image: si.value(i),
                short_by_text: st.value(i),
                query_tokens: qt.value(i),
                dropped_tokens: dt.value(i),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| AugmentError::io("tempdir", "/tmp", e))?;
        let path = dir.path().join("n.parquet");
        let rows = vec![
            NeighbourRow {
                id: 1,
                neighbours: vec![
                    Neighbour {
                        id: 5,
                        score: 0.8,
                        found_by: FoundBy::Image,
                        sampled: true,
                    },
                    Neighbour {
                        id: 9,
                        score: 0.7,
                        found_by: FoundBy::Text,
                        sampled: false,
                    },
                ],
                short_by_image: 1,
                short_by_text: 1,
                query_tokens: 12,
                dropped_tokens: 3,
            },
            NeighbourRow {
                id: 2,
                neighbours: vec![],
                short_by_image: 2,
                short_by_text: 2,
                query_tokens: 0,
                dropped_tokens: 0,
            },
        ];
        let w = write_shard(&path, &rows, "t")?;
        assert!(w.bytes > 0);
        assert_eq!(read_shard(&path)?, rows);
        Ok(())
    }
}
