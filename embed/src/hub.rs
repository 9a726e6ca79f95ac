//! `hf:<repo>` model sources: the Hugging Face hub cache (`$HF_HUB_CACHE`, `$HF_HOME/hub` or
//! `~/.cache/huggingface/hub`, the layout `huggingface-cli download` writes), and downloads into it
//! on first use. Downloads need the hub (`$HF_ENDPOINT`, default `https://huggingface.co`); with
//! `HF_HUB_OFFLINE=1`, or when the hub cannot be reached, the error says how to bring the files.
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{EmbedError, Result};

/// Files of a CLIP encoder repository in the Qdrant layout; only `model.onnx` is required.
pub const MODEL_FILES: &[&str] = &[
    "model.onnx",
    "preprocessor_config.json",
    "tokenizer.json",
    "config.json",
];

/// Where and how to look for hub models.
#[derive(Debug, Clone)]
pub struct Hub {
    pub cache: PathBuf,
    pub endpoint: String,
    pub offline: bool,
}

impl Hub {
    /// The hub settings of the environment, as `huggingface_hub` reads them.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        let cache = var("HF_HUB_CACHE")
            .map(PathBuf::from)
            .or_else(|| var("HF_HOME").map(|h| PathBuf::from(h).join("hub")))
            .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface/hub")))
            .unwrap_or_else(|| PathBuf::from(".cache/huggingface/hub"));
        let endpoint =
            std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".into());
        let offline = std::env::var("HF_HUB_OFFLINE")
            .is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
        Self {
            cache,
            endpoint,
            offline,
        }
    }

    fn repo_dir(&self, repo: &str) -> PathBuf {
        self.cache
            .join(format!("models--{}", repo.replace('/', "--")))
    }

    /// A cached snapshot folder of `repo` holding `model.onnx`.
    pub fn cached(&self, repo: &str) -> Option<PathBuf> {
        let dir = self.repo_dir(repo);
        // The snapshot `refs/main` points at, else any complete one.
        let main = fs::read_to_string(dir.join("refs/main"))
            .ok()
            .map(|c| dir.join("snapshots").join(c.trim()));
        if let Some(m) = main.filter(|m| m.join("model.onnx").is_file()) {
            return Some(m);
        }
        let mut snaps: Vec<PathBuf> = fs::read_dir(dir.join("snapshots"))
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("model.onnx").is_file())
            .collect();
        snaps.sort();
        snaps.pop()
    }

    /// The local folder of a model source: a path as given, or `hf:<repo>` from the cache,
    /// downloaded first if needed.
    pub fn resolve(&self, spec: &str) -> Result<PathBuf> {
        let Some(repo) = spec.strip_prefix("hf:") else {
            return Ok(PathBuf::from(spec));
        };
        let valid = repo.split('/').count() == 2
            && repo.split('/').all(|p| {
                !p.is_empty()
                    && p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            })
            && !repo.contains("..");
        if !valid {
            return Err(self.error(repo, "not a repository name of the form owner/name".into()));
        }
        if let Some(dir) = self.cached(repo) {
            return Ok(dir);
        }
        if self.offline {
            return Err(self.error(repo, "not in the cache and HF_HUB_OFFLINE is set".into()));
        }
        self.download(repo)
    }

    fn error(&self, repo: &str, reason: String) -> EmbedError {
        EmbedError::Hub {
            repo: repo.to_string(),
            reason: format!(
                "{reason}. Fetch it where the hub is reachable (`huggingface-cli download {repo}`) and copy {} here, \
                 or pass a local folder with model.onnx",
                self.repo_dir(repo).display()
            ),
        }
    }

    /// Download `MODEL_FILES` of the main revision into `snapshots/<commit>/`, each file written
    /// under a temporary name and renamed, then `refs/main`.
    fn download(&self, repo: &str) -> Result<PathBuf> {
        let dir = self.repo_dir(repo);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_connect(Some(std::time::Duration::from_secs(10)))
            .build()
            .into();
        let mut commit: Option<String> = None;
        let mut staged: Vec<(String, PathBuf)> = Vec::new();
        let staging = dir.join("staging");
        let io = |op: &'static str, p: &Path, e: std::io::Error| EmbedError::Io {
            op,
            path: p.to_path_buf(),
            source: e,
        };
        fs::create_dir_all(&staging).map_err(|e| io("creating", &staging, e))?;
        for file in MODEL_FILES {
            let url = format!(
                "{}/{repo}/resolve/main/{file}",
                self.endpoint.trim_end_matches('/')
            );
            tracing::info!(%url, "downloading");
            let resp = match agent.get(&url).call() {
                Ok(r) => r,
                Err(ureq::Error::StatusCode(404)) if *file != "model.onnx" => continue,
                Err(e) => return Err(self.error(repo, format!("could not download {url}: {e}"))),
            };
            if commit.is_none() {
                commit = resp
                    .headers()
                    .get("x-repo-commit")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
            }
            let path = staging.join(file);
            let mut body = resp.into_body();
            let mut reader = body.with_config().limit(4 << 30).reader();
            let mut out = fs::File::create(&path).map_err(|e| io("creating", &path, e))?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = reader
                    .read(&mut buf)
                    .map_err(|e| self.error(repo, format!("reading {url}: {e}")))?;
                if n == 0 {
                    break;
                }
                std::io::Write::write_all(&mut out, &buf[..n])
                    .map_err(|e| io("writing", &path, e))?;
            }
            out.sync_all().map_err(|e| io("fsync", &path, e))?;
            staged.push((file.to_string(), path));
        }
        let commit = commit.unwrap_or_else(|| "main".into());
        let snapshot = dir.join("snapshots").join(&commit);
        fs::create_dir_all(&snapshot).map_err(|e| io("creating", &snapshot, e))?;
        for (file, path) in staged {
            let dst = snapshot.join(&file);
            fs::rename(&path, &dst).map_err(|e| io("renaming into place", &dst, e))?;
        }
        fs::create_dir_all(dir.join("refs")).map_err(|e| io("creating", &dir, e))?;
        fs::write(dir.join("refs/main"), &commit).map_err(|e| io("writing", &dir, e))?;
        let _ = fs::remove_dir(&staging);
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_snapshot_is_used_and_paths_pass_through() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let hub = Hub {
            cache: tmp.path().to_path_buf(),
            endpoint: "http://127.0.0.1:9".into(),
            offline: false,
        };
        assert_eq!(
            hub.resolve("some/dir").expect("path"),
            PathBuf::from("some/dir")
        );
        let snap = tmp
            .path()
            .join("models--Qdrant--clip-ViT-B-32-vision/snapshots/abc123");
        fs::create_dir_all(&snap).expect("mkdir");
        fs::write(snap.join("model.onnx"), b"x").expect("write");
        fs::create_dir_all(tmp.path().join("models--Qdrant--clip-ViT-B-32-vision/refs"))
            .expect("mkdir");
        fs::write(
            tmp.path()
                .join("models--Qdrant--clip-ViT-B-32-vision/refs/main"),
            "abc123",
        )
        .expect("write");
        assert_eq!(
            hub.resolve("hf:Qdrant/clip-ViT-B-32-vision")
                .expect("cached"),
            snap
        );
    }

    #[test]
    fn unreachable_hub_and_offline_mode_say_what_to_do() {
        let tmp = tempfile::tempdir().expect("tempdir");
        // Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
        let hub = Hub {
            cache: tmp.path().to_path_buf(),
            endpoint: "http://127.0.0.1:9".into(),
            offline: false,
        };
        let msg = hub
            .resolve("hf:Qdrant/clip-ViT-B-32-text")
            .expect_err("no hub")
            .to_string();
        assert!(msg.contains("could not download http://127.0.0.1:9/Qdrant/clip-ViT-B-32-text/resolve/main/model.onnx"), "{msg}");
        assert!(
            msg.contains("huggingface-cli download Qdrant/clip-ViT-B-32-text"),
            "{msg}"
        );
        let offline = Hub {
            offline: true,
            ..hub.clone()
        };
        assert!(
            offline
                .resolve("hf:Qdrant/clip-ViT-B-32-text")
                .expect_err("offline")
                .to_string()
                .contains("HF_HUB_OFFLINE")
        );
        assert!(hub.resolve("hf:../../etc").is_err());
        assert!(hub.resolve("hf:noslash").is_err());
    }
}
