//! Retrieval for a batch of pairs: batched searches of the bank with the image and the text
//! queries, then, per pair and in parallel, [`choose`] with the paper's rules, searching again with
//! a longer candidate list when the first did not leave enough documents, and [`sample`].
use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use cm3_index::{Hit, SearchParams};
use rayon::prelude::*;

use crate::bank::{Bank, VectorCache};
use crate::config::AugmentConfig;
use crate::error::Result;
use crate::select::{Choice, FoundBy, Rules, choose, sample};

/// The pair a query belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryPair {
    pub id: u64,
    /// [`crate::bank::image_key`] of its image: bank pairs with the same image are its duplicates.
    pub image_key: u64,
}

/// Where the time went and how often the first candidate list was too short.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RetrieveStats {
    pub search_seconds: f64,
    pub select_seconds: f64,
    /// Pairs whose first candidate list ran out and that were searched again with a longer one.
    pub widened: u64,
}

impl RetrieveStats {
    pub fn add(&mut self, o: &Self) {
        self.search_seconds += o.search_seconds;
        self.select_seconds += o.select_seconds;
        self.widened += o.widened;
    }
}

/// Candidates fetched per query at first: enough for the wanted documents after the relevance,
/// duplicate and diversity rules have skipped some.
pub fn first_fetch(cfg: &AugmentConfig) -> usize {
    4 * (cfg.by_image + cfg.by_text) + 8
}

fn params<'a>(cfg: &AugmentConfig, k: usize, excluded: &'a HashSet<u64>) -> SearchParams<'a> {
    SearchParams {
        k,
        max_score: Some(cfg.relevance),
        exclude: (!excluded.is_empty()).then_some(excluded),
        ef_search: cfg.ef_search,
        min_score: None,
    }
}

/// Search the bank with `queries` (row-major unit vectors, one per pair), `k` hits each.
pub fn search(
    bank: &Bank,
    cfg: &AugmentConfig,
    excluded: &HashSet<u64>,
    queries: &[f32],
    k: usize,
) -> Result<Vec<Vec<Hit>>> {
    if queries.is_empty() {
        return Ok(Vec::new());
    }
    Ok(bank
        .index
        .search_batch(queries, &params(cfg, k.min(bank.len()).max(1), excluded))?)
}

/// Hits searched again at once, at most (beyond one list): 16 bytes each.
const WIDEN_HITS: usize = 1 << 17;

/// A pair's candidate lists while it is being chosen for.
struct Pending {
    img: Vec<Hit>,
    txt: Vec<Hit>,
    /// The length each list was searched with.
    k_img: usize,
    k_txt: usize,
    widened: bool,
    done: Option<Choice>,
}

/// Choose and sample the documents of each pair from its first candidate lists (`image_hits[i]`,
/// `text_hits[i]`, searched with [`first_fetch`] hits), searching again for the pairs whose lists
/// ran out. `image_queries`/`text_queries` are the query vectors (row-major), needed only then.
///
/// The searches again go in rounds: every pair is chosen for in parallel, then the lists that
/// ran out are searched again together, four times longer, one batch per length. A bank read
/// part by part then reads its parts once per batch, not once per pair.
#[allow(clippy::too_many_arguments)]
pub fn choose_all(
    bank: &Bank,
    cfg: &AugmentConfig,
    excluded: &HashSet<u64>,
    pairs: &[QueryPair],
    image_queries: &[f32],
    text_queries: &[f32],
    image_hits: Vec<Vec<Hit>>,
    text_hits: Vec<Vec<Hit>>,
) -> Result<(Vec<Choice>, RetrieveStats)> {
    let started = Instant::now();
    let dim = bank.dim();
    let rules = Rules {
        relevance: cfg.relevance,
        by_image: cfg.by_image,
        by_text: cfg.by_text,
    };
    let fetch = first_fetch(cfg).min(bank.len()).max(1);
    let mut state: Vec<Pending> = image_hits
        .into_iter()
        .zip(text_hits)
        .map(|(img, txt)| Pending {
            img,
            txt,
            k_img: fetch,
            k_txt: fetch,
            widened: false,
            done: None,
        })
        .collect();
    let mut search_seconds = 0.0;
    loop {
        // Each pair not done: its choice, or which of its lists to search again.
        let wants: Vec<(usize, bool, bool)> = state
            .par_iter_mut()
            .zip(pairs.par_iter())
            .enumerate()
            .filter(|(_, (st, _))| st.done.is_none())
            .filter_map(|(i, (st, pair))| {
                let dupes: Vec<u64> = bank.same_image(pair.image_key).collect();
                let skip = |id: u64| id == pair.id || dupes.contains(&id) || excluded.contains(&id);
                let cache = VectorCache::default();
                let mut c = choose(&st.img, &st.txt, &rules, skip, |a, b| {
                    bank.similarity_in(&cache, a, b)
                });
                // A list that came back full may hold more behind it; a shorter one is all there is.
                let more = |by: FoundBy, hits: &[Hit], k: usize| {
                    c.short(by) && hits.len() >= k && k < bank.len()
                };
                let (more_img, more_txt) = (
                    more(FoundBy::Image, &st.img, st.k_img),
                    more(FoundBy::Text, &st.txt, st.k_txt),
                );
                if !more_img && !more_txt {
                    sample(&mut c.neighbours, cfg.sample, cfg.seed, pair.id);
                    st.done = Some(c);
                    // Its lists are no longer needed (a widened one may be thousands long).
                    (st.img, st.txt) = (Vec::new(), Vec::new());
                    return None;
                }
                st.widened = true;
                Some((i, more_img, more_txt))
            })
            .collect();
        if wants.is_empty() {
            break;
        }
        // The lists to search again, by their new length: (pair, image?) per length.
        let mut by_k: BTreeMap<usize, Vec<(usize, bool)>> = BTreeMap::new();
        for &(i, more_img, more_txt) in &wants {
            // The lists searched again are replaced: the old ones go before the new arrive.
            let st = &mut state[i];
            if more_img {
                let k = (st.k_img * 4).min(bank.len());
                by_k.entry(k).or_default().push((i, true));
                st.img = Vec::new();
            }
            if more_txt {
                let k = (st.k_txt * 4).min(bank.len());
                by_k.entry(k).or_default().push((i, false));
                st.txt = Vec::new();
            }
        }
        let t = Instant::now();
        for (k, lists) in by_k {
            // Long lists in batches of about WIDEN_HITS hits: a round of lists thousands long
            // would otherwise hold them all at once (and a bank in parts, each part's as well).
            for batch in lists.chunks((WIDEN_HITS / k).max(1)) {
                let mut queries = Vec::with_capacity(batch.len() * dim);
                for &(i, image) in batch {
                    let from = if image { image_queries } else { text_queries };
                    queries.extend_from_slice(&from[i * dim..(i + 1) * dim]);
                }
                let hits = bank
                    .index
                    .search_batch(&queries, &params(cfg, k, excluded))?;
                for (&(i, image), h) in batch.iter().zip(hits) {
                    let st = &mut state[i];
                    if image {
                        (st.img, st.k_img) = (h, k);
                    } else {
                        (st.txt, st.k_txt) = (h, k);
                    }
                }
            }
        }
        search_seconds += t.elapsed().as_secs_f64();
    }
    let mut stats = RetrieveStats::default();
    let mut out = Vec::with_capacity(state.len());
    for st in state {
        stats.widened += u64::from(st.widened);
        out.push(st.done.unwrap_or_default());
    }
    stats.search_seconds = search_seconds;
    stats.select_seconds = started.elapsed().as_secs_f64() - search_seconds;
    Ok((out, stats))
}

/// [`search`] both queries of every pair, then [`choose_all`].
pub fn retrieve(
    bank: &Bank,
    cfg: &AugmentConfig,
    pairs: &[QueryPair],
    image_queries: &[f32],
    text_queries: &[f32],
) -> Result<(Vec<Choice>, RetrieveStats)> {
    let excluded = bank.excluded_ids();
    let started = Instant::now();
    let k = first_fetch(cfg);
    let img = maybe_search(
        bank,
        cfg,
        &excluded,
        image_queries,
        k,
        cfg.by_image,
        pairs.len(),
    )?;
    let txt = maybe_search(
        bank,
        cfg,
        &excluded,
        text_queries,
        k,
        cfg.by_text,
        pairs.len(),
    )?;
    let search_seconds = started.elapsed().as_secs_f64();
    let (choices, mut stats) = choose_all(
        bank,
        cfg,
        &excluded,
        pairs,
        image_queries,
        text_queries,
        img,
        txt,
    )?;
    stats.search_seconds += search_seconds;
    Ok((choices, stats))
}

/// Search only when documents of that modality are wanted; otherwise empty lists.
pub fn maybe_search(
    bank: &Bank,
    cfg: &AugmentConfig,
    excluded: &HashSet<u64>,
    queries: &[f32],
    k: usize,
    want: usize,
    n: usize,
) -> Result<Vec<Vec<Hit>>> {
    if want == 0 {
        return Ok(vec![Vec::new(); n]);
    }
    search(bank, cfg, excluded, queries, k)
}
