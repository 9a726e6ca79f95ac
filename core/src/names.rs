//! Names read from files or the network (shard names in a manifest, a commit id sent by a server)
//! end up in paths that cm3 writes, renames onto and removes. Each is checked here before use:
//! a hostile `manifest.json` must not be able to steer a write or a removal outside its dataset.
use std::path::{Component, Path};

use crate::error::{CoreError, Result};

/// Why `name` is not one plain path component, or `None` when it is.
fn problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name == "." || name == ".." {
        Some("it names a directory itself (`.` or `..`)")
    } else if name.contains('/') || name.contains('\\') {
        Some("it holds a path separator (`/` or `\\`)")
    } else if name.contains('\0') {
        Some("it holds a NUL byte")
    } else {
        None
    }
}

/// `name` if it is one plain path component: not empty, not `.` or `..`, without `/`, `\` or
/// NUL (so it is not absolute either). `what` says where the name came from, for the error.
pub fn plain_name<'a>(name: &'a str, what: &str) -> Result<&'a str> {
    match problem(name) {
        None => Ok(name),
        Some(reason) => Err(CoreError::UnsafeName {
            what: what.to_string(),
            name: name.to_string(),
            reason,
        }),
    }
}

/// `rel` if it is a relative path of plain components (as the manifest records files, e.g.
/// `pairs/x.parquet`): nothing absolute, no `.`/`..`, no `\` or NUL, nothing empty.
pub fn relative_path<'a>(rel: &'a str, what: &str) -> Result<&'a Path> {
    let bad = |reason| CoreError::UnsafeName {
        what: what.to_string(),
        name: rel.to_string(),
        reason,
    };
    if rel.is_empty() {
        return Err(bad("it is empty"));
    }
    if rel.starts_with('/') || Path::new(rel).is_absolute() {
        return Err(bad("it is an absolute path"));
    }
    for part in rel.split('/') {
        if let Some(reason) = problem(part) {
            return Err(bad(reason));
        }
    }
    let path = Path::new(rel);
    if !path.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(bad("it is not a plain relative path"));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_pass_and_everything_else_is_refused() {
        for ok in ["shard-00001", "a.parquet", "abc123def", ".hidden", "x..y"] {
            assert_eq!(plain_name(ok, "t").ok(), Some(ok));
        }
        for bad in [
            "", ".", "..", "a/b", "/etc", "a\\b", "..\\x", "a\0b", "../x",
        ] {
            let err = plain_name(bad, "shard name").expect_err(bad).to_string();
            assert!(err.contains("shard name"), "{err}");
            assert!(err.contains("one plain path component"), "{err}");
        }
    }

    #[test]
    fn relative_paths_stay_inside() {
        for ok in ["pairs/x.parquet", "index/doc/gen-000001", "packed"] {
            assert!(relative_path(ok, "t").is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "pairs/../../x",
            "pairs//x",
            "./pairs",
            "pairs/",
            "a\\..\\b",
            "a\0",
        ] {
            let err = relative_path(bad, "file of shard s").expect_err(bad);
            assert!(err.to_string().contains("file of shard s"), "{err}");
        }
    }
}
