//! COCO captions JSON (`captions_train2017.json` layout) plus its image folder.
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::{CocoPairs, IngestConfig};
use crate::error::{IngestError, Result};
use crate::normalize::{RejectReason, Rejection};

use super::{Emit, ImageData, RawCaption, RawRecord, SourceSpec};

#[derive(Deserialize)]
struct CocoFile {
    images: Vec<CocoImage>,
    annotations: Vec<CocoAnnotation>,
    #[serde(default)]
    licenses: Vec<CocoLicense>,
}

#[derive(Deserialize)]
struct CocoImage {
    id: u64,
    file_name: String,
    #[serde(default)]
    license: Option<u64>,
    #[serde(default)]
    flickr_url: Option<String>,
    #[serde(default)]
    coco_url: Option<String>,
}

#[derive(Deserialize)]
struct CocoAnnotation {
    id: u64,
    image_id: u64,
    caption: String,
}

#[derive(Deserialize)]
struct CocoLicense {
    id: u64,
    #[serde(default)]
    name: String,
    #[serde(default)]
    url: String,
}

/// A COCO captions JSON in `dir` or `dir/annotations/`: a file named `captions*.json`, or the only
/// `.json` file there.
pub fn find_captions_json(dir: &Path) -> Result<Option<PathBuf>> {
    for d in [dir.to_path_buf(), dir.join("annotations")] {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        let mut jsons: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && p.extension()
                        .is_some_and(|x| x.eq_ignore_ascii_case("json"))
            })
            .collect();
        jsons.sort();
        let named: Vec<&PathBuf> = jsons
            .iter()
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("captions"))
            })
            .collect();
        match named.as_slice() {
            [one] => return Ok(Some((*one).clone())),
            [] => {}
            many => {
                return Err(IngestError::input(
                    &d,
                    format!(
                        "{} captions JSON files here; give one of them as --input",
                        many.len()
                    ),
                ));
            }
        }
        // A single JSON that is not a sidecar of an image is taken as the captions file.
        if let [one] = jsons.as_slice() {
            let stem = one.with_extension("");
            let is_sidecar = super::IMAGE_EXTENSIONS
                .iter()
                .any(|e| stem.with_extension(e).exists());
            if !is_sidecar {
                return Ok(Some(one.clone()));
            }
        }
    }
    Ok(None)
}

/// SPDX-style id for the Creative Commons URLs COCO uses; the license name otherwise.
pub fn license_id(name: &str, url: &str) -> Option<String> {
    if let Some(rest) = url.split("creativecommons.org/licenses/").nth(1) {
        let mut parts = rest.trim_end_matches('/').split('/');
        if let (Some(kind), Some(version)) = (parts.next(), parts.next()) {
            return Some(format!("CC-{}-{version}", kind.to_ascii_uppercase()));
        }
    }
    if url.contains("flickr.com/commons/usage") {
        return Some("no-known-copyright-restrictions".into());
    }
    if url.contains("usa.gov/copyright") {
        return Some("us-government-work".into());
    }
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

fn split_from_name(path: &Path) -> Option<String> {
    let n = path.file_stem()?.to_string_lossy().to_ascii_lowercase();
    ["train", "val", "test"]
        .iter()
        .find(|s| n.contains(*s))
        .map(|s| s.to_string())
}

/// Where the images are: `--image-root`, the JSON's folder, its `images/`, or (COCO's own layout,
/// `annotations/captions_train2017.json` beside `train2017/`) the split folder next to `annotations/`.
fn image_root(src: &SourceSpec, first_file: Option<&str>) -> Result<PathBuf> {
    let json_dir = src.path.parent().unwrap_or(Path::new("."));
    if let Some(root) = &src.image_root {
        return Ok(root.clone());
    }
    let mut candidates = vec![json_dir.to_path_buf(), json_dir.join("images")];
    if let Some(parent) = json_dir.parent() {
        let stem = src
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(split) = stem.strip_prefix("captions_") {
            candidates.push(parent.join(split));
        }
        candidates.push(parent.join("images"));
        candidates.push(parent.to_path_buf());
    }
    let Some(first) = first_file else {
        return Ok(json_dir.to_path_buf());
    };
    candidates
        .iter()
        .find(|c| c.join(first).is_file())
        .cloned()
        .ok_or_else(|| {
            let tried: Vec<String> = candidates.iter().map(|c| c.display().to_string()).collect();
            IngestError::input(
                &src.path,
                format!(
                    "cannot find image `{first}` in any of: {}; pass --image-root",
                    tried.join(", ")
                ),
            )
        })
}

pub fn read(src: &SourceSpec, cfg: &IngestConfig, emit: Emit<'_>) -> Result<()> {
    // COCO's train2017 captions are about 90 MB; a FIFO or device is refused.
    let bytes = cm3_core::fsio::read_input(&src.path, 4 << 30)
        .map_err(|e| IngestError::io("reading", &src.path, e))?;
    let coco: CocoFile = serde_json::from_slice(&bytes)
        .map_err(|e| IngestError::input(&src.path, format!("not a COCO captions file: {e}")))?;
    let licenses: HashMap<u64, Option<String>> = coco
        .licenses
        .iter()
        .map(|l| (l.id, license_id(&l.name, &l.url)))
        .collect();
    let mut images: Vec<&CocoImage> = coco.images.iter().collect();
    images.sort_by_key(|i| i.id);
    let root = image_root(src, images.first().map(|i| i.file_name.as_str()))?;
    let mut captions: BTreeMap<u64, Vec<&CocoAnnotation>> = BTreeMap::new();
    for a in &coco.annotations {
        captions.entry(a.image_id).or_default().push(a);
    }
    for list in captions.values_mut() {
        list.sort_by_key(|a| a.id);
    }
    let split = split_from_name(&src.path);
    for img in images {
        let key = img.id.to_string();
        let path = root.join(&img.file_name);
        let outside = super::outside_refused(&root, &img.file_name, cfg);
        let provenance = img
            .flickr_url
            .clone()
            .or_else(|| img.coco_url.clone())
            .unwrap_or_else(|| path.to_string_lossy().into_owned());
        let anns = captions.remove(&img.id).unwrap_or_default();
        let mut rec = RawRecord {
            key: key.clone(),
            image: ImageData::Path(path),
            captions: Vec::new(),
            license: img
                .license
                .and_then(|l| licenses.get(&l).cloned().flatten()),
            provenance,
            split: split.clone(),
            metadata: Some(
                serde_json::json!({"coco_image_id": img.id, "file_name": img.file_name})
                    .to_string(),
            ),
            problem: None,
        };
        if anns.is_empty() {
            rec.problem = Some(Rejection::new(
                RejectReason::MissingCaption,
                format!(
                    "image {} ({}) has no caption annotation",
                    img.id, img.file_name
                ),
            ));
        } else {
            match cfg.coco_pairs {
                CocoPairs::PerCaption => {
                    rec.captions = anns
                        .iter()
                        .map(|a| RawCaption {
                            key: format!("{}/{}", img.id, a.id),
                            text: a.caption.as_bytes().to_vec(),
                            alt: Vec::new(),
                        })
                        .collect();
                }
                CocoPairs::PerImage => {
                    rec.captions = vec![RawCaption {
                        key: key.clone(),
                        text: anns[0].caption.as_bytes().to_vec(),
                        alt: anns[1..]
                            .iter()
                            .map(|a| a.caption.as_bytes().to_vec())
                            .collect(),
                    }];
                }
            }
        }
        if let Some(r) = outside
            && rec.problem.is_none()
        {
            rec.problem = Some(r);
        }
        if !emit(rec) {
            return Ok(());
        }
    }
    // Captions whose image id is not in `images`.
    for (image_id, anns) in captions {
        for a in anns {
            let r = RawRecord::rejected(
                format!("{image_id}/{}", a.id),
                src.path.to_string_lossy().into_owned(),
                Rejection::new(
                    RejectReason::MissingImage,
                    format!("caption {} names unknown image id {image_id}", a.id),
                ),
            );
            if !emit(r) {
                return Ok(());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cc_urls_become_spdx_ids() {
        assert_eq!(
            license_id(
                "Attribution License",
                "http://creativecommons.org/licenses/by/2.0/"
            )
            .as_deref(),
            Some("CC-BY-2.0")
        );
        assert_eq!(
            license_id("x", "http://creativecommons.org/licenses/by-nc-sa/2.0/").as_deref(),
            Some("CC-BY-NC-SA-2.0")
        );
        assert_eq!(license_id("Custom", "").as_deref(), Some("Custom"));
        assert_eq!(license_id(" ", ""), None);
    }
}
