//! `hf:<repo>` model sources: the Hugging Face hub cache (`$HF_HUB_CACHE`, `$HF_HOME/hub` or
//! `~/.cache/huggingface/hub`, the layout `huggingface-cli download` writes), and downloads into it
//! on first use. Downloads need the hub (`$HF_ENDPOINT`, default `https://huggingface.co`); with
//! `HF_HUB_OFFLINE=1`, or when the hub cannot be reached, the error says how to bring the files.
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{EmbedError, Result};

/// Files of a CLIP encoder repository in the Qdrant layout; only `model.onnx` is required.
pub const MODEL_FILES: &[&str] = &[
    "model.onnx",
    "preprocessor_config.json",
    "tokenizer.json",
    "config.json",
];

/// How long a download waits for the hub's next bytes unless `HF_HUB_DOWNLOAD_TIMEOUT` says.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where and how to look for hub models.
#[derive(Debug, Clone)]
pub struct Hub {
    pub cache: PathBuf,
    pub endpoint: String,
    pub offline: bool,
    /// How long a download may wait for the hub's answer, or for its next bytes
    /// (`HF_HUB_DOWNLOAD_TIMEOUT` seconds, as `huggingface_hub` reads it; default 30).
    pub timeout: Duration,
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
        let timeout = std::env::var("HF_HUB_DOWNLOAD_TIMEOUT")
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
            .map_or(DEFAULT_TIMEOUT, Duration::from_secs_f64);
        Self {
            cache,
            endpoint,
            offline,
            timeout,
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
        // `refs/main` is a file: a name in it that is not one plain component is ignored.
        let main = fs::read_to_string(dir.join("refs/main"))
            .ok()
            .filter(|c| cm3_core::names::plain_name(c.trim(), "refs/main").is_ok())
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

    /// Download `MODEL_FILES` into `snapshots/<commit>/` (the commit of the first answer; the
    /// other files are asked for at that commit), then point `refs/main` at it. Each process
    /// stages into a folder of its own, so the tasks of a job array starting on an empty cache
    /// never write into each other's files; every file is checked against the SHA-256 the hub
    /// gives for it (the ETag of an LFS file), synced, and renamed into place, `model.onnx`
    /// last since it is what marks a snapshot complete. A file another process already put
    /// in place is used as it is.
    fn download(&self, repo: &str) -> Result<PathBuf> {
        let dir = self.repo_dir(repo);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_recv_response(Some(self.timeout))
            .timeout_per_read(Some(self.timeout))
            // Redirects are followed here, to read the hub's own headers (commit, checksum)
            // rather than the CDN's.
            .max_redirects(0)
            .build()
            .into();
        fs::create_dir_all(&dir).map_err(|e| io("creating", &dir, e))?;
        let staging = tempfile::Builder::new()
            .prefix(".staging-")
            .tempdir_in(&dir)
            .map_err(|e| io("creating a staging folder in", &dir, e))?;
        let mut commit: Option<String> = None;
        // (file, staged copy; None when another process already put it in place)
        let mut staged: Vec<(&str, Option<PathBuf>)> = Vec::new();
        for &file in MODEL_FILES {
            let revision = commit.as_deref().unwrap_or("main");
            let url = format!(
                "{}/{repo}/resolve/{revision}/{file}",
                self.endpoint.trim_end_matches('/')
            );
            tracing::info!(%url, "downloading");
            let Some(answer) = self.get(&agent, repo, &url, file != "model.onnx")? else {
                continue;
            };
            if commit.is_none() {
                // The commit id names the snapshot folder: from the network, so checked first.
                if let Some(c) = &answer.commit
                    && let Err(e) = cm3_core::names::plain_name(c, "the x-repo-commit header")
                {
                    return Err(self.error(repo, format!("{url}: {e}")));
                }
                commit = answer.commit.clone();
            }
            let snapshot = dir
                .join("snapshots")
                .join(commit.as_deref().unwrap_or("main"));
            if snapshot.join(file).is_file() {
                staged.push((file, None));
                continue;
            }
            let path = staging.path().join(file);
            self.receive(repo, &url, answer, &path)?;
            staged.push((file, Some(path)));
        }
        let commit = commit.unwrap_or_else(|| "main".into());
        let snapshot = dir.join("snapshots").join(&commit);
        fs::create_dir_all(&snapshot).map_err(|e| io("creating", &snapshot, e))?;
        staged.sort_by_key(|(file, _)| *file == "model.onnx");
        for (file, path) in staged {
            // Renaming over a copy another process placed meanwhile replaces it with the same
            // verified bytes.
            if let Some(path) = path {
                let dst = snapshot.join(file);
                fs::rename(&path, &dst).map_err(|e| io("renaming into place", &dst, e))?;
            }
        }
        cm3_core::fsio::sync_dir(&snapshot)?;
        cm3_core::fsio::write_atomic(
            &dir.join("refs/main"),
            commit.as_bytes(),
            // Unique to this download (the staging folder's random name), as the staging is.
            &format!(
                "hub{}",
                staging
                    .path()
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
            ),
        )?;
        Ok(snapshot)
    }

    /// GET `url`, following redirects by hand: the commit and checksum headers are taken from
    /// the hub's answers only (a CDN's ETag is not the file's SHA-256). `None`: an optional file
    /// the repository does not have.
    fn get(
        &self,
        agent: &ureq::Agent,
        repo: &str,
        url: &str,
        optional: bool,
    ) -> Result<Option<Answer>> {
        let mut at = url.to_string();
        let (mut commit, mut sha256) = (None, None);
        for _ in 0..MAX_REDIRECTS {
            let resp = match agent.get(&at).call() {
                Ok(r) => r,
                Err(ureq::Error::StatusCode(404)) if optional => return Ok(None),
                Err(e) => return Err(self.error(repo, format!("could not download {at}: {e}"))),
            };
            let header = |k: &str| resp.headers().get(k).and_then(|v| v.to_str().ok());
            if at.starts_with(self.endpoint.trim_end_matches('/')) {
                commit = commit.or_else(|| header("x-repo-commit").map(str::to_string));
                sha256 = sha256.or_else(|| {
                    [header("x-linked-etag"), header("etag")]
                        .into_iter()
                        .flatten()
                        .find_map(etag_sha256)
                });
            }
            if !resp.status().is_redirection() {
                return Ok(Some(Answer {
                    url: at,
                    commit,
                    sha256,
                    resp,
                }));
            }
            let Some(location) = header("location") else {
                return Err(self.error(repo, format!("{at}: a redirect without a Location")));
            };
            at = join_url(&at, location);
        }
        Err(self.error(repo, format!("{url}: more than {MAX_REDIRECTS} redirects")))
    }

    /// Write the body of `answer` to `path`, check its SHA-256 against the hub's, and sync it.
    fn receive(&self, repo: &str, url: &str, answer: Answer, path: &Path) -> Result<()> {
        let at = answer.url;
        let mut body = answer.resp.into_body();
        let mut reader = body.with_config().limit(4 << 30).reader();
        let out = fs::File::create(path).map_err(|e| io("creating", path, e))?;
        let mut out = cm3_core::fsio::HashingWriter::new(out);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| self.error(repo, format!("reading {at}: {e}")))?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])
                .map_err(|e| io("writing", path, e))?;
        }
        let (out, got, _) = out.into_parts();
        if let Some(want) = answer.sha256
            && want != got
        {
            return Err(self.error(
                repo,
                format!(
                    "{url}: the download's SHA-256 is {got}, the hub's ETag says {want} \
                     (corrupted in transit or by a proxy)"
                ),
            ));
        }
        out.sync_all().map_err(|e| io("fsync", path, e))
    }
}

/// How long to wait for a connection to the hub.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_REDIRECTS: usize = 10;

/// A hub answer whose body is still to be read.
#[derive(Debug)]
struct Answer {
    /// Where the body comes from (after redirects).
    url: String,
    commit: Option<String>,
    /// The file's SHA-256 (hex) as the hub gives it, if it does.
    sha256: Option<String>,
    resp: ureq::http::Response<ureq::Body>,
}

fn io(op: &'static str, p: &Path, e: std::io::Error) -> EmbedError {
    EmbedError::Io {
        op,
        path: p.to_path_buf(),
        source: e,
    }
}

/// The SHA-256 in an ETag (`"…"`, or weak `W/"…"`): an LFS file's is its content's SHA-256, 64 hex
/// digits; another file's is its git blob id (40), which is not checked.
fn etag_sha256(etag: &str) -> Option<String> {
    let tag = etag.trim().trim_start_matches("W/").trim_matches('"');
    (tag.len() == 64 && tag.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| tag.to_ascii_lowercase())
}

/// `location` (absolute, or relative to `base` as the hub sends for renamed repositories)
/// as an absolute URL.
fn join_url(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    let origin_end = base
        .find("://")
        .and_then(|s| base[s + 3..].find('/').map(|i| s + 3 + i))
        .unwrap_or(base.len());
    if location.starts_with('/') {
        format!("{}{location}", &base[..origin_end])
    } else {
        let dir_end = base
            .rfind('/')
            .filter(|&i| i >= origin_end)
            .unwrap_or(base.len());
        format!("{}/{location}", &base[..dir_end])
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
            timeout: DEFAULT_TIMEOUT,
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

    /// A hub (here a local stand-in) whose `x-repo-commit` would make the snapshot folder
    /// `<cache>/models--o--n/snapshots/../../../escape`: refused before anything is written there.
    #[test]
    fn a_commit_id_that_is_not_one_name_is_refused() {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            for stream in listener.incoming().take(8) {
                let Ok(mut s) = stream else { return };
                let mut r = BufReader::new(s.try_clone().expect("clone"));
                let mut line = String::new();
                while r.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nx-repo-commit: ../../../escape\r\n\
                      Content-Length: 1\r\nConnection: close\r\n\r\nx",
                );
            }
        });
        let tmp = tempfile::tempdir().expect("tempdir");
        let cache = tmp.path().join("cache");
        let hub = Hub {
            cache: cache.clone(),
            endpoint: format!("http://{addr}"),
            offline: false,
            timeout: DEFAULT_TIMEOUT,
        };
        let msg = hub
            .resolve("hf:o/n")
            .expect_err("hostile commit")
            .to_string();
        assert!(
            msg.contains("x-repo-commit") && msg.contains("../../../escape"),
            "{msg}"
        );
        assert!(!tmp.path().join("escape").exists());
        assert!(!cache.join("escape").exists());
    }

    #[test]
    fn unreachable_hub_and_offline_mode_say_what_to_do() {
        let tmp = tempfile::tempdir().expect("tempdir");
        // Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
        let hub = Hub {
            cache: tmp.path().to_path_buf(),
            endpoint: "http://127.0.0.1:9".into(),
            offline: false,
            timeout: DEFAULT_TIMEOUT,
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

    /// A canned hub on loopback: each connection gets the answer `route` gives for its request
    /// path (status, headers, body, and a pause after that many body bytes, to be slow or stall).
    pub(super) struct Canned {
        pub status: u16,
        pub headers: Vec<(String, String)>,
        pub body: Vec<u8>,
        pub pause: Option<(usize, std::time::Duration)>,
    }

    pub(super) fn serve(route: impl Fn(&str) -> Canned + Send + Sync + 'static) -> String {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let route = std::sync::Arc::new(route);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let route = route.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                    let mut line = String::new();
                    let _ = reader.read_line(&mut line);
                    let path = line.split(' ').nth(1).unwrap_or("/").to_string();
                    // The rest of the request head.
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).map_or(true, |n| n == 0) || h == "\r\n" {
                            break;
                        }
                    }
                    let c = route(&path);
                    let mut head = format!(
                        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                        c.status,
                        c.body.len()
                    );
                    for (k, v) in &c.headers {
                        head.push_str(&format!("{k}: {v}\r\n"));
                    }
                    head.push_str("\r\n");
                    let _ = stream.write_all(head.as_bytes());
                    let (first, pause) = c.pause.unwrap_or((c.body.len(), Default::default()));
                    let _ = stream.write_all(&c.body[..first]);
                    let _ = stream.flush();
                    std::thread::sleep(pause);
                    let _ = stream.write_all(&c.body[first..]);
                });
            }
        });
        format!("http://{addr}")
    }

    fn canned(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Canned {
        Canned {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.to_vec(),
            pause: None,
        }
    }

    fn sha256_hex(bytes: &[u8]) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(bytes))
    }

    const ONNX: &[u8] = b"pretend this is an ONNX graph";

    /// The hub's answers for repository `o/r` at commit `c0ffee`: `model.onnx` is an LFS file
    /// (a redirect to a "CDN" path carrying its SHA-256 as `X-Linked-Etag`), `config.json` a
    /// plain one; `etag` is what the hub claims the model's SHA-256 is.
    fn lfs_hub(etag: String, pause: Option<(usize, std::time::Duration)>) -> String {
        serve(move |path| match path {
            "/o/r/resolve/main/model.onnx" | "/o/r/resolve/c0ffee/model.onnx" => canned(
                302,
                &[
                    ("Location", "/cdn/blob"),
                    ("X-Repo-Commit", "c0ffee"),
                    ("X-Linked-Etag", &format!("\"{etag}\"")),
                ],
                b"",
            ),
            "/cdn/blob" => Canned {
                pause,
                ..canned(200, &[("ETag", "\"not-a-sha\"")], ONNX)
            },
            "/o/r/resolve/main/config.json" | "/o/r/resolve/c0ffee/config.json" => canned(
                200,
                &[
                    ("X-Repo-Commit", "c0ffee"),
                    ("ETag", "\"0123456789012345678901234567890123456789\""),
                ],
                b"{}",
            ),
            _ => canned(404, &[], b"not found"),
        })
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> = fs::read_dir(dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    }

    #[test]
    fn a_download_follows_the_lfs_redirect_and_checks_the_sha256() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let hub = test_hub(tmp.path(), lfs_hub(sha256_hex(ONNX), None));
        let snap = hub.resolve("hf:o/r").expect("download");
        assert_eq!(snap, tmp.path().join("models--o--r/snapshots/c0ffee"));
        assert_eq!(fs::read(snap.join("model.onnx")).expect("model"), ONNX);
        assert_eq!(fs::read(snap.join("config.json")).expect("config"), b"{}");
        assert_eq!(names(&snap), ["config.json", "model.onnx"]);
        // Nothing staged is left behind.
        assert_eq!(
            names(&tmp.path().join("models--o--r")),
            ["refs", "snapshots"]
        );
        assert_eq!(
            fs::read_to_string(tmp.path().join("models--o--r/refs/main")).expect("ref"),
            "c0ffee"
        );
    }

    #[test]
    fn a_download_that_does_not_match_the_hubs_sha256_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let wrong = sha256_hex(b"another file");
        let hub = test_hub(tmp.path(), lfs_hub(wrong.clone(), None));
        let msg = hub.resolve("hf:o/r").expect_err("corrupt").to_string();
        assert!(msg.contains("model.onnx") && msg.contains(&wrong), "{msg}");
        assert!(msg.contains(&sha256_hex(ONNX)), "{msg}");
        assert!(hub.cached("o/r").is_none());
        let repo = tmp.path().join("models--o--r");
        assert!(!repo.exists() || !names(&repo).iter().any(|n| n.contains("staging")));
    }

    /// A hub that sends the headers and then nothing: the download ends with a timeout error
    /// instead of hanging the job.
    #[test]
    fn a_stalled_download_times_out() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let endpoint = lfs_hub(
            sha256_hex(ONNX),
            Some((4, std::time::Duration::from_secs(3600))),
        );
        let mut hub = test_hub(tmp.path(), endpoint);
        hub.timeout = std::time::Duration::from_millis(500);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(hub.resolve("hf:o/r").map_err(|e| e.to_string()));
        });
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the download hung");
        let msg = got.expect_err("stalled");
        assert!(
            msg.contains("reading") && msg.contains("/cdn/blob"),
            "{msg}"
        );
    }

    /// Two processes of a job array starting on an empty cache download at once: each stages
    /// its own copy, both end with the same complete snapshot.
    #[test]
    fn concurrent_downloads_into_one_cache_do_not_collide() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let endpoint = lfs_hub(
            sha256_hex(ONNX),
            Some((8, std::time::Duration::from_millis(300))),
        );
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let hub = test_hub(tmp.path(), endpoint.clone());
                std::thread::spawn(move || hub.resolve("hf:o/r").map_err(|e| e.to_string()))
            })
            .collect();
        for w in workers {
            let snap = w.join().expect("thread").expect("download");
            assert_eq!(fs::read(snap.join("model.onnx")).expect("model"), ONNX);
        }
        assert_eq!(
            names(&tmp.path().join("models--o--r")),
            ["refs", "snapshots"]
        );
    }

    fn test_hub(cache: &Path, endpoint: String) -> Hub {
        Hub {
            cache: cache.to_path_buf(),
            endpoint,
            offline: false,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}
