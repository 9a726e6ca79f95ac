//! The packed sequences of a prepared dataset (`packed/{train,val}.{bin,idx}`), read by
//! positioned reads (the workspace forbids `unsafe`, which mapping a file needs; the page cache
//! serves repeated reads the same way), in a seeded order.
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use cm3_core::rng::SplitMix64;
use cm3_core::vocab::{self, VocabLayout};
use cm3_pack::megatron::read_index;

use crate::error::{Result, TrainError, io};

/// One split's sequences, all of `seq_len` tokens.
#[derive(Debug)]
pub struct PackedSplit {
    bin: File,
    bin_path: PathBuf,
    pointers: Vec<i64>,
    pub seq_len: usize,
    /// `<prefix>.outputs.bin`, when the output-only loss reads it.
    outputs: Option<(File, PathBuf)>,
}

impl PackedSplit {
    /// Open `<prefix>.idx` and `<prefix>.bin`, checking that every sequence is `seq_len` tokens
    /// and that the `.bin` holds them all.
    pub fn open(prefix: &Path, seq_len: usize) -> Result<Self> {
        let idx_path = prefix.with_extension("idx");
        let bin_path = prefix.with_extension("bin");
        let bad = |path: &Path, reason: String| TrainError::Dataset {
            path: path.to_path_buf(),
            reason,
        };
        if !idx_path.is_file() || !bin_path.is_file() {
            return Err(bad(
                prefix,
                "no packed sequences (.idx and .bin): run `cm3 pack` or `cm3 build` first".into(),
            ));
        }
        let (lengths, pointers) = read_index(&idx_path)?;
        if let Some((i, l)) = lengths
            .iter()
            .enumerate()
            .find(|&(_, &l)| l as usize != seq_len)
        {
            return Err(bad(
                &idx_path,
                format!("sequence {i} has {l} tokens; meta.json says {seq_len}"),
            ));
        }
        let bin = File::open(&bin_path).map_err(io("opening", &bin_path))?;
        let size = bin.metadata().map_err(io("reading", &bin_path))?.len();
        let need = pointers
            .last()
            .map_or(0, |&p| p as u64 + 4 * seq_len as u64);
        if size < need {
            return Err(bad(
                &bin_path,
                format!("{size} bytes, the index describes {need}: truncated"),
            ));
        }
        Ok(Self {
            bin,
            bin_path,
            pointers,
            seq_len,
            outputs: None,
        })
    }

    /// Open `<prefix>.outputs.bin` for [`Self::read_targets_into`], checking that it marks
    /// every token of the split.
    pub fn open_outputs(&mut self, prefix: &Path) -> Result<()> {
        let path = prefix.with_extension(cm3_pack::stage::OUTPUT_MARKS);
        let bad = |reason: String| TrainError::Dataset {
            path: path.clone(),
            reason,
        };
        if !path.is_file() {
            return Err(bad(
                "missing: the output-only loss needs the outputs `cm3 sft build` \
                 marks (pretraining datasets have none; an SFT directory built before they \
                 existed needs `cm3 sft build --rebuild`)"
                    .into(),
            ));
        }
        let f = File::open(&path).map_err(io("opening", &path))?;
        let size = f.metadata().map_err(io("reading", &path))?.len();
        let need = self
            .pointers
            .last()
            .map_or(0, |&p| p as u64 / 4 + self.seq_len as u64);
        if size != need {
            return Err(bad(format!(
                "{size} bytes for the {need} tokens of {}",
                self.bin_path.display()
            )));
        }
        self.outputs = Some((f, path));
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.pointers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pointers.is_empty()
    }

    /// Sequence `i`, appended to `out` as i64 ids.
    pub fn read_into(&self, i: usize, out: &mut Vec<i64>) -> Result<()> {
        let mut buf = vec![0u8; 4 * self.seq_len];
        self.bin
            .read_exact_at(&mut buf, self.pointers[i] as u64)
            .map_err(io("reading", &self.bin_path))?;
        out.extend(
            buf.chunks_exact(4)
                .map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
        );
        Ok(())
    }
}

impl PackedSplit {
    /// Sequence `i`'s targets for the output-only loss, appended to `out`: `ids` (the sequence
    /// as [`Self::read_into`] read it) with every token not marked as an output replaced by
    /// `pad` (unscored). Only the marks are read.
    pub fn targets_into(&self, i: usize, ids: &[i64], pad: u32, out: &mut Vec<i64>) -> Result<()> {
        let Some((f, path)) = &self.outputs else {
            return Err(TrainError::Dataset {
                path: self.bin_path.clone(),
                reason: "its output marks were not opened".into(),
            });
        };
        let mut marks = vec![0u8; self.seq_len];
        f.read_exact_at(&mut marks, self.pointers[i] as u64 / 4)
            .map_err(io("reading", path))?;
        out.extend(
            ids.iter()
                .zip(&marks)
                .map(|(&t, &m)| if m == 0 { i64::from(pad) } else { t }),
        );
        Ok(())
    }
}

/// A prepared dataset as training sees it: the layout and both splits.
#[derive(Debug)]
pub struct PreparedData {
    pub root: PathBuf,
    pub layout: VocabLayout,
    pub seq_len: usize,
    pub pad: u32,
    pub train: PackedSplit,
    /// Absent when the dataset has no validation sequences.
    pub val: Option<PackedSplit>,
    /// sha256 of `packed/meta.json`, recorded in the run.
    pub meta_sha256: String,
}

impl PreparedData {
    pub fn open(root: &Path) -> Result<Self> {
        let meta_path = root.join("packed/meta.json");
        let bad = |reason: String| TrainError::Dataset {
            path: meta_path.clone(),
            reason,
        };
        let text = std::fs::read_to_string(&meta_path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                bad("missing: run `cm3 pack` or `cm3 build` first".into())
            } else {
                io("reading", &meta_path)(e)
            }
        })?;
        let meta: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let version = meta["objective_version"].as_u64().unwrap_or(1);
        if version != u64::from(cm3_pack::stage::OBJECTIVE_VERSION) {
            return Err(bad(format!(
                "packed with version {version} of the training objective; this cm3 trains on \
                 version {} ({}). Re-pack the dataset: `cm3 pack {} --rebuild`",
                cm3_pack::stage::OBJECTIVE_VERSION,
                cm3_pack::stage::OBJECTIVE,
                root.display()
            )));
        }
        let seq_len = meta["seq_len"]
            .as_u64()
            .ok_or_else(|| bad("no seq_len".into()))? as usize;
        let layout: VocabLayout = serde_json::from_value(meta["vocab"].clone())
            .map_err(|e| bad(format!("no vocabulary layout: {e}")))?;
        let pad = layout.special(vocab::PAD)?;
        // Packed from tokens or neighbours made from shards that have changed since (e.g.
        // `cm3 ingest --rebuild` without rebuilding the later stages): refused, naming the stage.
        let manifest_path = root.join("manifest.json");
        if let Some(m) = cm3_core::Manifest::load(&manifest_path)
            .map_err(|e| bad(format!("its manifest: {e}")))?
        {
            for stage in ["pack", "tokenize", "augment"] {
                m.check_fresh(stage).map_err(|e| TrainError::Dataset {
                    path: manifest_path.clone(),
                    reason: e.to_string(),
                })?;
            }
        }
        let train = PackedSplit::open(&root.join("packed/train"), seq_len)?;
        if train.is_empty() {
            return Err(bad("no training sequences".into()));
        }
        let val = PackedSplit::open(&root.join("packed/val"), seq_len)?;
        Ok(Self {
            root: root.to_path_buf(),
            meta_sha256: cm3_core::fsio::sha256_file(&meta_path)?.sha256,
            layout,
            seq_len,
            pad,
            train,
            val: (!val.is_empty()).then_some(val),
        })
    }

    /// Open both splits' output marks (the output-only loss).
    pub fn open_outputs(&mut self) -> Result<()> {
        self.train.open_outputs(&self.root.join("packed/train"))?;
        if let Some(val) = &mut self.val {
            val.open_outputs(&self.root.join("packed/val"))?;
        }
        Ok(())
    }
}

/// The order of the training sequences: a seeded permutation per epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DataPosition {
    pub epoch: u64,
    /// Index into the epoch's permutation of the next sequence.
    pub offset: usize,
}

/// Hands out training sequences in a reproducible order, resumable from a [`DataPosition`].
#[derive(Debug)]
pub struct Sampler {
    seed: u64,
    n: usize,
    pos: DataPosition,
    order: Vec<usize>,
}

impl Sampler {
    pub fn new(seed: u64, n: usize, pos: DataPosition) -> Self {
        let order = permutation(seed, pos.epoch, n);
        Self {
            seed,
            n,
            pos,
            order,
        }
    }

    pub fn position(&self) -> DataPosition {
        self.pos
    }

    /// The next sequence index.
    pub fn next_index(&mut self) -> usize {
        if self.pos.offset >= self.n {
            self.pos = DataPosition {
                epoch: self.pos.epoch + 1,
                offset: 0,
            };
            self.order = permutation(self.seed, self.pos.epoch, self.n);
        }
        let i = self.order[self.pos.offset];
        self.pos.offset += 1;
        i
    }
}

/// Fisher–Yates with a SplitMix64 stream of (seed, epoch).
fn permutation(seed: u64, epoch: u64, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = SplitMix64::for_pair(seed, 0x0074_7261_696e, epoch);
    for i in (1..n).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_epoch_is_a_permutation_and_resumes_exactly() {
        let mut s = Sampler::new(
            3,
            10,
            DataPosition {
                epoch: 0,
                offset: 0,
            },
        );
        let first: Vec<usize> = (0..10).map(|_| s.next_index()).collect();
        let mut sorted = first.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        assert_ne!(first, (0..10).collect::<Vec<_>>(), "not shuffled");
        let second: Vec<usize> = (0..10).map(|_| s.next_index()).collect();
        assert_ne!(first, second, "the same order every epoch");
        // From a saved position, the same continuation.
        let mut a = Sampler::new(
            3,
            10,
            DataPosition {
                epoch: 0,
                offset: 0,
            },
        );
        for _ in 0..13 {
            a.next_index();
        }
        let mut b = Sampler::new(3, 10, a.position());
        let ra: Vec<usize> = (0..15).map(|_| a.next_index()).collect();
        let rb: Vec<usize> = (0..15).map(|_| b.next_index()).collect();
        assert_eq!(ra, rb);
    }
}
