//! Inputs of a caption evaluation: a COCO results list of predictions, and references as a COCO
//! captions annotation file or an `{"image_id": ["caption", ...]}` map.

use std::fmt;
use std::path::Path;

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use serde_json::Value;

use crate::error::{EvalError, Result};

/// Files larger than this are refused before reading (COCO train2014 captions are ~80 MB).
pub const MAX_FILE_BYTES: u64 = 1 << 30;
/// Captions longer than this (bytes) are refused: ROUGE-L is quadratic in caption length.
pub const MAX_CAPTION_BYTES: usize = 20_000;

/// An image id as the input spells it: COCO uses integers, other sets strings. A prediction's
/// `7` and a reference key `"7"` name the same image.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ImageId {
    Int(i64),
    Str(String),
}

impl ImageId {
    fn from_json(value: &Value) -> Option<Self> {
        match value {
            Value::Number(n) => n.as_i64().map(Self::Int),
            Value::String(s) => Some(Self::Str(s.clone())),
            _ => None,
        }
    }

    /// The text under which ids are matched across files.
    pub fn key(&self) -> String {
        self.to_string()
    }

    pub fn to_json(&self) -> Value {
        match self {
            Self::Int(i) => Value::from(*i),
            Self::Str(s) => Value::from(s.as_str()),
        }
    }
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Int(i) => write!(f, "{i}"),
            Self::Str(s) => f.write_str(s),
        }
    }
}

/// One generated caption.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub image_id: ImageId,
    pub caption: String,
}

/// The captions to evaluate, in file order; `source` names the input in errors.
#[derive(Debug, Clone)]
pub struct Predictions {
    pub source: String,
    pub entries: Vec<Prediction>,
}

/// The reference captions of each image, in the order pycocoevalcap visits the images (the
/// `images` list of a COCO file, the key order of a map); `source` names the input in errors.
#[derive(Debug, Clone)]
pub struct References {
    pub source: String,
    pub images: Vec<(ImageId, Vec<String>)>,
}

/// Reads a file of at most [`MAX_FILE_BYTES`].
fn read_bounded(path: &Path) -> Result<Vec<u8>> {
    crate::files::read_bounded(path, MAX_FILE_BYTES)
}

fn parse<'a, T: Deserialize<'a>>(path: &Path, bytes: &'a [u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| EvalError::Json {
        path: path.to_path_buf(),
        source,
    })
}

fn caption_of(value: Option<&Value>, source: &str, at: &str) -> Result<String> {
    let caption = value
        .and_then(Value::as_str)
        .ok_or_else(|| EvalError::input(source, format!("{at}: a caption is not a string")))?;
    if caption.len() > MAX_CAPTION_BYTES {
        return Err(EvalError::input(
            source,
            format!(
                "{at}: caption of {} bytes, more than {MAX_CAPTION_BYTES}",
                caption.len()
            ),
        ));
    }
    Ok(caption.to_string())
}

/// Reads a COCO results list `[{"image_id": .., "caption": ..}, ...]` (other fields ignored).
pub fn read_predictions(path: impl AsRef<Path>) -> Result<Predictions> {
    let path = path.as_ref();
    let source = path.display().to_string();
    let Value::Array(items) = parse(path, &read_bounded(path)?)? else {
        return Err(EvalError::input(
            source,
            "expected a JSON list of {\"image_id\", \"caption\"}",
        ));
    };
    let mut entries = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let image_id = item
            .get("image_id")
            .and_then(ImageId::from_json)
            .ok_or_else(|| {
                EvalError::input(
                    &source,
                    format!("entry {i}: \"image_id\" is not an integer or string"),
                )
            })?;
        let caption = caption_of(item.get("caption"), &source, &format!("image {image_id}"))?;
        entries.push(Prediction { image_id, caption });
    }
    Ok(Predictions { source, entries })
}

/// Reads references: a COCO captions file (`{"images": [...], "annotations": [{"image_id",
/// "caption"}, ...]}`) or a map `{"image_id": ["caption", ...]}`.
pub fn read_references(path: impl AsRef<Path>) -> Result<References> {
    let path = path.as_ref();
    let source = path.display().to_string();
    let bytes = read_bounded(path)?;
    let value: Value = parse(path, &bytes)?;
    let images = if value.get("annotations").is_some() {
        coco_references(&value, &source)?
    } else if value.is_object() {
        // Parsed again, this time keeping the key order (serde_json's map sorts keys).
        let ordered: OrderedMap = parse(path, &bytes)?;
        map_references(ordered.0, &source)?
    } else {
        return Err(EvalError::input(
            source,
            "expected a COCO captions file or a map {\"image_id\": [\"caption\", ...]}",
        ));
    };
    Ok(References { source, images })
}

fn coco_references(value: &Value, source: &str) -> Result<Vec<(ImageId, Vec<String>)>> {
    let annotations = value["annotations"]
        .as_array()
        .ok_or_else(|| EvalError::input(source, "\"annotations\" is not a list"))?;
    let mut images: Vec<(ImageId, Vec<String>)> = Vec::new();
    let mut index = std::collections::HashMap::new();
    // pycocotools visits images in the order of the "images" list.
    if let Some(list) = value.get("images").and_then(Value::as_array) {
        for (i, image) in list.iter().enumerate() {
            let id = image
                .get("id")
                .and_then(ImageId::from_json)
                .ok_or_else(|| {
                    EvalError::input(
                        source,
                        format!("images[{i}]: \"id\" is not an integer or string"),
                    )
                })?;
            if index.insert(id.key(), images.len()).is_none() {
                images.push((id, Vec::new()));
            }
        }
    }
    for (i, ann) in annotations.iter().enumerate() {
        let id = ann
            .get("image_id")
            .and_then(ImageId::from_json)
            .ok_or_else(|| {
                EvalError::input(
                    source,
                    format!("annotations[{i}]: \"image_id\" is not an integer or string"),
                )
            })?;
        let caption = caption_of(ann.get("caption"), source, &format!("image {id}"))?;
        let slot = *index.entry(id.key()).or_insert_with(|| {
            images.push((id, Vec::new()));
            images.len() - 1
        });
        images[slot].1.push(caption);
    }
    Ok(images)
}

fn map_references(
    entries: Vec<(String, Value)>,
    source: &str,
) -> Result<Vec<(ImageId, Vec<String>)>> {
    let mut images = Vec::with_capacity(entries.len());
    for (key, captions) in entries {
        let list = captions.as_array().ok_or_else(|| {
            EvalError::input(source, format!("image {key}: expected a list of captions"))
        })?;
        let captions = list
            .iter()
            .map(|c| caption_of(Some(c), source, &format!("image {key}")))
            .collect::<Result<Vec<_>>>()?;
        let id = key.parse::<i64>().map_or(ImageId::Str(key), ImageId::Int);
        images.push((id, captions));
    }
    Ok(images)
}

/// A JSON object's entries in file order.
struct OrderedMap(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for OrderedMap {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = OrderedMap;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedMap, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    entries.push(entry);
                }
                Ok(OrderedMap(entries))
            }
        }
        deserializer.deserialize_map(Entries)
    }
}
