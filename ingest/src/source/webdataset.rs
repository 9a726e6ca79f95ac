//! WebDataset tar shards as img2dataset writes them: `key.jpg` (or png, webp, ...), `key.txt`,
//! optional `key.json`, consecutive members grouped by key. Nothing is ever extracted to disk.
use std::fs::File;
use std::io::{BufReader, Read};

use crate::error::{IngestError, Result};
use crate::normalize::{RejectReason, Rejection};

use super::{
    Emit, ImageData, RawCaption, RawRecord, SourceSpec, Want, is_image_ext, license_from_json,
    url_from_json,
};

#[derive(Default)]
struct Group {
    key: String,
    image: Option<(ImageData, String)>,
    caption: Option<Vec<u8>>,
    json: Option<Vec<u8>>,
    /// A member over its size limit: the whole group is rejected with this.
    too_large: Option<Rejection>,
}

/// Largest image member read (bytes); a tar header may declare any size up to 2^64.
pub const MAX_IMAGE_MEMBER_BYTES: u64 = 256 << 20;
/// Largest caption (`.txt`) or sidecar (`.json`) member read (bytes).
pub const MAX_TEXT_MEMBER_BYTES: u64 = 1 << 20;

/// A member's bytes, or its declared size when that is over `limit` (nothing is read then).
enum Member {
    Bytes(Vec<u8>),
    TooLarge(u64),
}

/// True for absolute paths and paths with `..`: never trusted, whatever we do with them.
fn unsafe_member(path: &[u8]) -> bool {
    path.starts_with(b"/") || path.split(|&b| b == b'/' || b == b'\\').any(|c| c == b"..")
}

/// WebDataset key and extension: the key ends at the first dot of the file name.
fn split_key(path: &str) -> (String, String) {
    let (dir, name) = match path.rfind('/') {
        Some(i) => (&path[..=i], &path[i + 1..]),
        None => ("", path),
    };
    match name.find('.') {
        Some(i) => (
            format!("{dir}{}", &name[..i]),
            name[i + 1..].to_ascii_lowercase(),
        ),
        None => (path.to_string(), String::new()),
    }
}

fn last_ext(ext: &str) -> &str {
    ext.rsplit('.').next().unwrap_or(ext)
}

/// Emits finished groups, then the rejects found while they were open, keeping record numbers in
/// step with what the engine counts.
struct Emitter<'e, 'f> {
    emit: Emit<'f>,
    tar_name: &'e str,
    next_index: u64,
    pending: Vec<RawRecord>,
}

impl Emitter<'_, '_> {
    /// Emit `group` (if any) and the pending rejects; `false` when the consumer wants no more.
    fn flush(&mut self, group: Option<Group>) -> bool {
        let mut go_on = true;
        if let Some(g) = group {
            go_on = (self.emit)(finish_group(g, self.tar_name));
            self.next_index += 1;
        }
        for r in std::mem::take(&mut self.pending) {
            go_on = go_on && (self.emit)(r);
            self.next_index += 1;
        }
        go_on
    }

    /// The archive ended in the middle of a member: the open group becomes a reject that says so.
    fn truncated(&mut self, group: Option<Group>, err: &str) -> Result<()> {
        let key = group
            .as_ref()
            .map_or_else(|| "#archive".to_string(), |g| g.key.clone());
        let r = RawRecord::rejected(
            key.clone(),
            format!("{}#{key}", self.tar_name),
            Rejection::new(
                RejectReason::MalformedRecord,
                format!("tar archive is truncated or corrupt: {err}"),
            ),
        );
        self.pending.insert(0, r);
        self.flush(None);
        Ok(())
    }
}

fn read_member(entry: &mut tar::Entry<'_, impl Read>, limit: u64) -> std::io::Result<Member> {
    let size = entry.size();
    if size > limit {
        return Ok(Member::TooLarge(size));
    }
    let mut buf = Vec::with_capacity(size as usize);
    entry.take(limit).read_to_end(&mut buf)?;
    // The tar reader stops quietly at the end of a cut file; a short member is truncation.
    if buf.len() as u64 != size {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!(
                "member `{}` holds {} of its {size} bytes",
                String::from_utf8_lossy(&entry.path_bytes()),
                buf.len()
            ),
        ));
    }
    Ok(Member::Bytes(buf))
}

/// The rejection of a member over its limit.
fn too_large(path: &str, size: u64, limit: u64) -> Rejection {
    Rejection::new(
        RejectReason::MalformedRecord,
        format!("tar member `{path}` declares {size} bytes, over the {limit}-byte limit"),
    )
}

pub fn read(src: &SourceSpec, want: Want<'_>, emit: Emit<'_>) -> Result<()> {
    let file = File::open(&src.path).map_err(|e| IngestError::io("opening", &src.path, e))?;
    let mut archive = tar::Archive::new(BufReader::with_capacity(1 << 20, file));
    let entries = archive
        .entries_with_seek()
        .map_err(|e| IngestError::input(&src.path, format!("not a tar archive: {e}")))?;
    let tar_name = src.path.to_string_lossy().into_owned();
    let mut out = Emitter {
        emit,
        tar_name: &tar_name,
        next_index: 0,
        pending: Vec::new(),
    };
    let mut group: Option<Group> = None;
    for entry in entries {
        let mut entry = match entry {
            Ok(e) => e,
            Err(e) => return out.truncated(group, &e.to_string()),
        };
        let raw_path = entry.path_bytes().into_owned();
        let path = String::from_utf8_lossy(&raw_path).into_owned();
        let kind = entry.header().entry_type();
        if kind.is_dir() || kind.is_pax_global_extensions() {
            continue;
        }
        // Reported after the open group, so the group keeps the record number it started with.
        let problem = if unsafe_member(&raw_path) {
            Some(Rejection::new(
                RejectReason::UnsafePath,
                format!("tar member `{path}` has an absolute path or `..`"),
            ))
        } else if !kind.is_file() {
            Some(Rejection::new(
                RejectReason::MalformedRecord,
                format!("tar member `{path}` is a {kind:?}, not a file"),
            ))
        } else {
            None
        };
        if let Some(p) = problem {
            out.pending.push(RawRecord::rejected(
                path.clone(),
                format!("{tar_name}#{path}"),
                p,
            ));
            continue;
        }
        let (key, ext) = split_key(&path);
        let new_group = group.as_ref().is_none_or(|g| g.key != key);
        if new_group && (group.is_some() || !out.pending.is_empty()) && !out.flush(group.take()) {
            return Ok(());
        }
        let g = group.get_or_insert_with(|| Group {
            key,
            ..Group::default()
        });
        let ext = last_ext(&ext).to_string();
        if is_image_ext(&ext) {
            if g.image.is_none() {
                let data = if want(out.next_index) {
                    match read_member(&mut entry, MAX_IMAGE_MEMBER_BYTES) {
                        Ok(Member::Bytes(b)) => ImageData::Bytes(b),
                        Ok(Member::TooLarge(size)) => {
                            g.too_large = Some(too_large(&path, size, MAX_IMAGE_MEMBER_BYTES));
                            ImageData::Skipped
                        }
                        Err(e) => return out.truncated(group, &e.to_string()),
                    }
                } else {
                    ImageData::Skipped
                };
                g.image = Some((data, path));
            }
        } else if ext == "txt" || ext == "json" {
            match read_member(&mut entry, MAX_TEXT_MEMBER_BYTES) {
                Ok(Member::Bytes(b)) if ext == "txt" => g.caption = Some(b),
                Ok(Member::Bytes(b)) => g.json = Some(b),
                Ok(Member::TooLarge(size)) => {
                    g.too_large = Some(too_large(&path, size, MAX_TEXT_MEMBER_BYTES));
                }
                Err(e) => return out.truncated(group, &e.to_string()),
            }
        }
    }
    out.flush(group.take());
    Ok(())
}

fn finish_group(g: Group, tar_name: &str) -> RawRecord {
    let meta: Option<serde_json::Value> = g.json.as_deref().and_then(|b| match serde_json::from_slice(b) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(input = tar_name, key = %g.key, "ignoring unreadable {}.json: {e}", g.key);
            None
        }
    });
    let provenance = meta
        .as_ref()
        .and_then(url_from_json)
        .unwrap_or_else(|| format!("{tar_name}#{}", g.key));
    let mut rec = RawRecord {
        key: g.key.clone(),
        image: ImageData::Skipped,
        captions: Vec::new(),
        license: meta.as_ref().and_then(license_from_json),
        provenance,
        split: meta
            .as_ref()
            .and_then(|m| m.get("split"))
            .and_then(|s| s.as_str())
            .map(str::to_string),
        metadata: meta.as_ref().map(|m| m.to_string()),
        problem: None,
    };
    if let Some(problem) = g.too_large {
        rec.problem = Some(problem);
        return rec;
    }
    match (g.image, g.caption) {
        (Some((data, _)), Some(text)) => {
            rec.image = data;
            rec.captions.push(RawCaption {
                key: g.key,
                text,
                alt: Vec::new(),
            });
        }
        (Some((_, path)), None) => {
            rec.problem = Some(Rejection::new(
                RejectReason::MissingCaption,
                format!("`{path}` has no `{}.txt` caption", g.key),
            ));
        }
        (None, _) => {
            rec.problem = Some(Rejection::new(
                RejectReason::MissingImage,
                format!("key `{}` has no image member", g.key),
            ));
        }
    }
    rec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_at_first_dot_of_file_name() {
        assert_eq!(split_key("000001.jpg"), ("000001".into(), "jpg".into()));
        assert_eq!(
            split_key("dir.v2/a.seg.PNG"),
            ("dir.v2/a".into(), "seg.png".into())
        );
        assert_eq!(last_ext("seg.png"), "png");
    }

    #[test]
    fn unsafe_paths() {
        assert!(unsafe_member(b"/etc/passwd"));
        assert!(unsafe_member(b"a/../../x.jpg"));
        assert!(unsafe_member(b"..\\x.jpg"));
        assert!(!unsafe_member(b"a/b..c.jpg"));
    }

    /// A tar header may declare any size (PAX allows 2^64): a member over its limit is a reject
    /// naming it, never an allocation of the declared size (2^40 aborted the process, 2^63
    /// panicked); the records around it are unaffected.
    #[test]
    fn members_over_their_limit_are_rejected_without_being_allocated() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("shard.tar");
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |name: &str, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, data).expect("append");
        };
        add("a.jpg", b"jpeg bytes");
        add("a.txt", b"a caption");
        add("b.txt", &vec![b'x'; (MAX_TEXT_MEMBER_BYTES + 1) as usize]);
        add("b.jpg", b"jpeg bytes");
        let mut bytes = b.into_inner().expect("tar");
        // A last member whose header declares 2^40 bytes (the archive then ends).
        let mut h = tar::Header::new_gnu();
        h.set_path("c.jpg").expect("path");
        h.set_size(1 << 40);
        h.set_mode(0o644);
        h.set_cksum();
        bytes.truncate(bytes.len() - 1024);
        bytes.extend_from_slice(h.as_bytes());
        bytes.extend_from_slice(&[0u8; 1024]);
        std::fs::write(&path, &bytes).expect("write");
        let src = SourceSpec {
            path: path.clone(),
            format: crate::config::InputFormat::Webdataset,
            id: "t".into(),
            image_root: None,
        };
        let mut got = Vec::new();
        read(&src, &|_| true, &mut |r| {
            got.push((r.key.clone(), r.problem.map(|p| p.detail)));
            true
        })
        .expect("read");
        assert_eq!(got[0], ("a".to_string(), None));
        let b = got.iter().find(|(k, _)| k == "b").expect("b");
        assert!(
            b.1.as_deref()
                .is_some_and(|d| d.contains("b.txt") && d.contains("limit")),
            "{got:?}"
        );
        let c = got.iter().find(|(k, _)| k.contains('c')).expect("c");
        assert!(c.1.is_some(), "{got:?}");
    }
}
