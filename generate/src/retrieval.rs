//! Retrieval at inference (§2.1) from the run's memory bank, with the CLIP encoders its dataset
//! was embedded with. `cm3 generate` and `cm3 eval` share it: an evaluation over thousands of
//! prompts opens the encoders and the index once.
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use cm3_core::VocabLayout;
use cm3_core::tokens::TokenRow;
use cm3_index::{MipsIndex, SearchParams, VectorSet};
use cm3_pack::example::Doc;
use cm3_pack::masking::Specials;

use crate::clip::ClipScorer;
use crate::error::{GenerateError, Result};

/// The retrieval rules of training (§2.1): a document scoring above this against the query is a
/// near-duplicate and skipped; so is one scoring above it against a document already chosen.
pub const RELEVANCE: f32 = 0.9;

fn bad(reason: impl Into<String>) -> GenerateError {
    GenerateError::Invalid(reason.into())
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Documents retrieved for a prompt: their tokens (`<eos> text <break> image` each, best first)
/// and (pair id, relevance score).
#[derive(Debug, Clone, Default)]
pub struct Retrieved {
    pub tokens: Vec<u32>,
    pub docs: Vec<(u64, f32)>,
}

/// The dataset's memory bank at inference: its CLIP text encoder, its document index and (read
/// once, on first use) its token rows.
pub struct Retriever {
    dataset: PathBuf,
    clip: ClipScorer,
    index: Box<dyn MipsIndex>,
    specials: Specials,
    rows: Option<HashMap<u64, TokenRow>>,
    /// Pairs never to retrieve (an evaluation set's own pairs).
    excluded: HashSet<u64>,
}

impl std::fmt::Debug for Retriever {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retriever")
            .field("dataset", &self.dataset)
            .field("excluded", &self.excluded.len())
            .finish_non_exhaustive()
    }
}

impl Retriever {
    pub fn open(dataset: &Path, layout: &VocabLayout, threads: usize) -> Result<Self> {
        let (_, index) = cm3_index::stage::open_dataset_index(dataset, VectorSet::Doc)?;
        Ok(Self {
            dataset: dataset.to_path_buf(),
            clip: ClipScorer::for_dataset(dataset, threads)?,
            index,
            specials: Specials::from_layout(layout)?,
            rows: None,
            excluded: HashSet::new(),
        })
    }

    /// Never retrieve these pairs.
    pub fn exclude(&mut self, ids: impl IntoIterator<Item = u64>) {
        self.excluded.extend(ids);
    }

    pub fn clip(&mut self) -> &mut ClipScorer {
        &mut self.clip
    }

    fn rows(&mut self) -> Result<&HashMap<u64, TokenRow>> {
        if self.rows.is_none() {
            let dir = self.dataset.join("tokens");
            let mut rows = HashMap::new();
            let entries = std::fs::read_dir(&dir)
                .map_err(|e| bad(format!("{}: {e} (run `cm3 tokenize` first)", dir.display())))?;
            for e in entries {
                let path = e
                    .map_err(|e| bad(format!("{}: {e}", dir.display())))?
                    .path();
                if path.extension().is_some_and(|x| x == "parquet") {
                    for r in cm3_core::tokens::read_shard(&path)? {
                        rows.insert(r.id, r);
                    }
                }
            }
            self.rows = Some(rows);
        }
        self.rows
            .as_ref()
            .ok_or_else(|| bad("token rows did not load"))
    }

    /// The `k` documents for `prompt` with the training rules: relevance ≤ 0.9 to the query, no
    /// duplicate, and none scoring above 0.9 against one already chosen.
    pub fn retrieve(&mut self, prompt: &str, k: usize) -> Result<Retrieved> {
        if k == 0 {
            return Ok(Retrieved::default());
        }
        let q = self.clip.text_query(prompt)?;
        let hits = self.index.search_with(
            &q,
            &SearchParams {
                max_score: Some(RELEVANCE),
                ..SearchParams::top(4 * k + 8 + self.excluded.len().min(64))
            },
        )?;
        let wanted: HashSet<u64> = hits.iter().map(|h| h.id).collect();
        let vectors = cm3_index::stage::lookup_vectors(&self.dataset, VectorSet::Doc, &wanted)?;
        let mut chosen: Vec<(u64, f32, &Vec<f32>)> = Vec::new();
        for h in &hits {
            if chosen.len() == k {
                break;
            }
            if self.excluded.contains(&h.id) || chosen.iter().any(|c| c.0 == h.id) {
                continue;
            }
            let v = vectors
                .get(&h.id)
                .ok_or_else(|| bad(format!("retrieved pair {:016x} has no stored vector", h.id)))?;
            if chosen.iter().any(|c| dot(c.2, v) > RELEVANCE) {
                continue;
            }
            chosen.push((h.id, h.score, v));
        }
        let docs: Vec<(u64, f32)> = chosen.iter().map(|c| (c.0, c.1)).collect();
        let sp = self.specials.clone();
        let rows = self.rows()?;
        let mut tokens = Vec::new();
        for (id, _) in &docs {
            let r = rows
                .get(id)
                .ok_or_else(|| bad(format!("retrieved pair {id:016x} has no tokens")))?;
            Doc {
                text: &r.text,
                image: &r.image,
            }
            .write(&mut tokens, false, &sp);
        }
        Ok(Retrieved { tokens, docs })
    }
}
