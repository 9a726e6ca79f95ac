//! The files below a folder, in a sorted order, listed in memory bounded by [`RUN_ENTRIES`]
//! whatever the folder's size: an external merge sort. Entries are sorted in runs of
//! [`RUN_ENTRIES`], each run spilled to an anonymous temporary file in the system's temporary
//! folder (`$TMPDIR`; unlinked from the start, so a crash leaves nothing behind), and the runs
//! merged by level, [`FAN_IN`] at a time, so that each entry is rewritten once per level. A folder
//! input of 100M images thus costs its listing a few MiB of memory (and, per level, 8 bytes a
//! file plus its sort prefix and relative path of temporary disk), not the 660 B a pair that one
//! sorted `Vec` of every path did, and records come out in exactly the order that sort gave.
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{IngestError, Result};

/// Entries sorted in memory before they are spilled as one run.
pub const RUN_ENTRIES: usize = 1 << 14;

/// Runs merged at once (open files, and one read buffer each).
pub const FAN_IN: usize = 64;

/// Longest sort key or path accepted back from a run (a run is our own file; this bounds what a
/// damaged one could make us allocate).
const MAX_FIELD_BYTES: usize = 1 << 20;

/// One listed file: the prefix it sorts by first, then its path relative to the root as
/// [`component_order`] writes it (from which the path is rebuilt: it is not stored twice).
type Entry = (Vec<u8>, Vec<u8>);

/// The bytes of `name` (one path component) as the OS spells it; `None` for a name that is not
/// UTF-8 where the OS's names are not bytes.
#[cfg(unix)]
fn name_bytes(name: &std::ffi::OsStr) -> Option<&[u8]> {
    use std::os::unix::ffi::OsStrExt;
    Some(name.as_bytes())
}

#[cfg(not(unix))]
fn name_bytes(name: &std::ffi::OsStr) -> Option<&[u8]> {
    name.to_str().map(str::as_bytes)
}

#[cfg(unix)]
fn name_from(bytes: &[u8]) -> std::ffi::OsString {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::OsStr::from_bytes(bytes).to_os_string()
}

#[cfg(not(unix))]
fn name_from(bytes: &[u8]) -> std::ffi::OsString {
    // Only UTF-8 names are listed here (`name_bytes`).
    String::from_utf8_lossy(bytes).into_owned().into()
}

/// The order of [`Path`]'s `Ord` (component by component) as bytes: the components of `rel`
/// joined by a 0 byte, which sorts below every byte a file name can hold. `None` when a name
/// cannot be spelt as bytes (not UTF-8, off Unix).
fn component_order(rel: &Path) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for (i, c) in rel.components().enumerate() {
        if i > 0 {
            out.push(0);
        }
        out.extend_from_slice(name_bytes(c.as_os_str())?);
    }
    Some(out)
}

/// Every regular file (or link) below `root`, hidden files and folders excluded, ordered by the
/// bytes `prefix` gives its path relative to `root`, then by that path (component by component,
/// as [`Path`] orders); files for which `prefix` gives `None` are left out.
pub fn sorted_files(root: &Path, prefix: impl Fn(&Path) -> Option<Vec<u8>>) -> Result<SortedFiles> {
    // Spilled runs by level: level i holds merges of FAN_IN^i runs, and a level that reaches
    // FAN_IN is merged into one run of the next, so each entry is rewritten once per level.
    let mut levels: Vec<Vec<File>> = Vec::new();
    let mut run: Vec<Entry> = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).map_err(|e| IngestError::io("listing", &dir, e))? {
            let e = e.map_err(|e| IngestError::io("listing", &dir, e))?;
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let ft = e
                .file_type()
                .map_err(|err| IngestError::io("reading", e.path(), err))?;
            let path = e.path();
            if ft.is_dir() {
                stack.push(path);
            } else if ft.is_file() || ft.is_symlink() {
                let rel = path.strip_prefix(root).unwrap_or(&path);
                let Some(first) = prefix(rel) else { continue };
                let Some(rel) = component_order(rel) else {
                    return Err(IngestError::io(
                        "listing",
                        &path,
                        std::io::Error::new(std::io::ErrorKind::InvalidData, "name is not UTF-8"),
                    ));
                };
                run.push((first, rel));
                if run.len() == RUN_ENTRIES {
                    let spilled = spill(root, &mut run)?;
                    add_run(root, &mut levels, spilled)?;
                }
            }
        }
    }
    run.sort_unstable();
    let mut runs: Vec<File> = levels.into_iter().flatten().collect();
    if runs.is_empty() {
        return Ok(SortedFiles {
            merge: Merge::Memory(run.into_iter()),
            root: root.to_path_buf(),
        });
    }
    if !run.is_empty() {
        runs.push(spill(root, &mut run)?);
    }
    while runs.len() > FAN_IN {
        let oldest: Vec<File> = runs.drain(..FAN_IN).collect();
        runs.push(merge_to_file(root, oldest)?);
    }
    Ok(SortedFiles {
        merge: Merge::Runs(RunMerge::new(root, runs)?),
        root: root.to_path_buf(),
    })
}

/// `file` added to level 0 of `levels`, merging every level that reaches [`FAN_IN`] runs into
/// one run of the next.
fn add_run(root: &Path, levels: &mut Vec<Vec<File>>, file: File) -> Result<()> {
    let mut carry = file;
    for level in 0.. {
        if levels.len() == level {
            levels.push(Vec::new());
        }
        levels[level].push(carry);
        if levels[level].len() < FAN_IN {
            return Ok(());
        }
        carry = merge_to_file(root, std::mem::take(&mut levels[level]))?;
    }
    Ok(())
}

fn sort_error(root: &Path, e: std::io::Error) -> IngestError {
    IngestError::io("sorting the listing of", root, e)
}

/// `run`, sorted, written to a new anonymous file (rewound for reading); `run` is left empty.
fn spill(root: &Path, run: &mut Vec<Entry>) -> Result<File> {
    run.sort_unstable();
    let file = tempfile::tempfile().map_err(|e| sort_error(root, e))?;
    let mut w = BufWriter::new(file);
    for entry in run.drain(..) {
        write_entry(&mut w, &entry).map_err(|e| sort_error(root, e))?;
    }
    rewind(root, w)
}

fn rewind(root: &Path, w: BufWriter<File>) -> Result<File> {
    let mut file = w
        .into_inner()
        .map_err(|e| sort_error(root, e.into_error()))?;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| sort_error(root, e))?;
    Ok(file)
}

/// The runs `runs`, merged into one new run.
fn merge_to_file(root: &Path, runs: Vec<File>) -> Result<File> {
    let merge = RunMerge::new(root, runs)?;
    let file = tempfile::tempfile().map_err(|e| sort_error(root, e))?;
    let mut w = BufWriter::new(file);
    for entry in merge {
        write_entry(&mut w, &entry?).map_err(|e| sort_error(root, e))?;
    }
    rewind(root, w)
}

fn write_entry(w: &mut impl Write, (prefix, rel): &Entry) -> std::io::Result<()> {
    for field in [prefix, rel] {
        let len = u32::try_from(field.len()).map_err(std::io::Error::other)?;
        w.write_all(&len.to_le_bytes())?;
        w.write_all(field)?;
    }
    Ok(())
}

/// The next entry of a run, or `None` at its end.
fn read_entry(r: &mut impl Read) -> std::io::Result<Option<Entry>> {
    let mut fields = [Vec::new(), Vec::new()];
    for (i, field) in fields.iter_mut().enumerate() {
        let mut len = [0u8; 4];
        if i == 0 {
            // The run's end is a clean end only between entries: a cut-off length is an error.
            let first = loop {
                match r.read(&mut len[..1]) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    other => break other?,
                }
            };
            if first == 0 {
                return Ok(None);
            }
            r.read_exact(&mut len[1..])?;
        } else {
            r.read_exact(&mut len)?;
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_FIELD_BYTES {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a listing run holds a {len}-byte field"),
            ));
        }
        field.resize(len, 0);
        r.read_exact(field)?;
    }
    let [prefix, rel] = fields;
    Ok(Some((prefix, rel)))
}

/// A k-way merge of sorted runs.
struct RunMerge {
    root: PathBuf,
    readers: Vec<BufReader<File>>,
    heap: BinaryHeap<Reverse<(Entry, usize)>>,
    /// A run failed to read: the merge ends with that error, never skips the run's rest.
    failed: bool,
}

impl RunMerge {
    fn new(root: &Path, runs: Vec<File>) -> Result<Self> {
        let mut merge = RunMerge {
            root: root.to_path_buf(),
            readers: runs.into_iter().map(BufReader::new).collect(),
            heap: BinaryHeap::new(),
            failed: false,
        };
        for i in 0..merge.readers.len() {
            merge.refill(i)?;
        }
        Ok(merge)
    }

    fn refill(&mut self, i: usize) -> Result<()> {
        if let Some(entry) =
            read_entry(&mut self.readers[i]).map_err(|e| sort_error(&self.root, e))?
        {
            self.heap.push(Reverse((entry, i)));
        }
        Ok(())
    }
}

impl Iterator for RunMerge {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let Reverse((entry, i)) = self.heap.pop()?;
        let refilled = self.refill(i);
        self.failed = refilled.is_err();
        Some(refilled.map(|()| entry))
    }
}

enum Merge {
    Memory(std::vec::IntoIter<Entry>),
    Runs(RunMerge),
}

/// The paths of [`sorted_files`], in order.
pub struct SortedFiles {
    merge: Merge,
    root: PathBuf,
}

impl std::fmt::Debug for SortedFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SortedFiles")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl Iterator for SortedFiles {
    type Item = Result<PathBuf>;

    fn next(&mut self) -> Option<Self::Item> {
        let entry = match &mut self.merge {
            Merge::Memory(it) => Ok(it.next()?),
            Merge::Runs(m) => m.next()?,
        };
        Some(entry.map(|(_, rel)| {
            let mut path = self.root.clone();
            for name in rel.split(|&b| b == 0) {
                path.push(name_from(name));
            }
            path
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn touch(root: &Path, rel: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(&p, b"x").expect("write");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        /// Spilled and merged (in passes, past the fan-in) or not, the listing is the plain sort.
        #[test]
        fn external_order_is_the_in_memory_sort(
            names in proptest::collection::btree_set("[a-c.]{1,3}(/[a-c.]{1,3}){0,2}\\.(jpg|txt)", 0..60)
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut made = Vec::new();
            for n in &names {
                // A file may not also be a folder: skip names that clash with one made already.
                let p = dir.path().join(n);
                if p.ancestors().skip(1).any(Path::is_file) || p.is_dir() {
                    continue;
                }
                if n.split('/').any(|c| c.starts_with('.')) {
                    continue;
                }
                touch(dir.path(), n);
                made.push(p);
            }
            made.sort();
            let listed: Vec<PathBuf> = sorted_files(dir.path(), |_| Some(Vec::new()))
                .expect("list")
                .collect::<Result<_>>()
                .expect("read");
            prop_assert_eq!(&listed, &made);
        }
    }

    /// More runs than the fan-in, of interleaved entries: merged by level, then in one.
    #[test]
    fn runs_are_spilled_and_merged_in_passes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let n_runs = 3 * FAN_IN + 5;
        let mut levels = Vec::new();
        for r in 0..n_runs {
            let mut run: Vec<Entry> = (0..4)
                .rev()
                .map(|i| {
                    let k = format!("{:05}", i * n_runs + r).into_bytes();
                    (k.clone(), k)
                })
                .collect();
            let spilled = spill(dir.path(), &mut run).expect("spill");
            add_run(dir.path(), &mut levels, spilled).expect("level");
        }
        // Three merges into level 1, five runs left at level 0.
        assert_eq!(levels.iter().map(Vec::len).collect::<Vec<_>>(), [5, 3]);
        let mut runs: Vec<File> = levels.into_iter().flatten().collect();
        while runs.len() > FAN_IN {
            let oldest: Vec<File> = runs.drain(..FAN_IN).collect();
            runs.push(merge_to_file(dir.path(), oldest).expect("merge"));
        }
        let got: Vec<Vec<u8>> = RunMerge::new(dir.path(), runs)
            .expect("merge")
            .map(|e| e.expect("entry").0)
            .collect();
        let want: Vec<Vec<u8>> = (0..4 * n_runs)
            .map(|i| format!("{i:05}").into_bytes())
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_folder_past_one_run_lists_as_the_sort() {
        let dir = tempfile::tempdir().expect("tempdir");
        let n = RUN_ENTRIES * 2 + 7;
        for i in 0..n {
            // Names whose creation order is not their sorted order.
            touch(dir.path(), &format!("d{}/{:06}.txt", i % 3, (i * 7919) % n));
        }
        let listed: Vec<PathBuf> = sorted_files(dir.path(), |_| Some(Vec::new()))
            .expect("list")
            .collect::<Result<_>>()
            .expect("read");
        let mut want: Vec<PathBuf> = listed.clone();
        want.sort();
        assert_eq!(listed.len(), n);
        assert_eq!(listed, want);
    }

    #[test]
    fn a_damaged_run_is_an_error_not_an_allocation_or_an_end() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        let err = read_entry(&mut bytes.as_slice()).expect_err("refused");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        // A length cut off after its first byte is not the run's end.
        let err = read_entry(&mut [3u8, 0].as_slice()).expect_err("cut off");
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
        assert!(read_entry(&mut [0u8; 0].as_slice()).expect("end").is_none());
    }
}
