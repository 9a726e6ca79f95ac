//! The paper's choice of retrieved documents for one pair (§2.1), as a pure function of the
//! candidate lists, so that every rule can be tested on synthetic vectors:
//!
//! - **relevance**: a candidate whose score with the query is above `relevance` (0.9) is skipped;
//! - **no self, no duplicates**: the pair itself, pairs with the same image, and excluded ids are
//!   skipped by id, since a query after dropout can score below the threshold against its own
//!   document;
//! - **diversity**: a candidate already chosen, or whose own score with a chosen document is above
//!   `relevance` (a near-copy of it), is skipped;
//! - **modality**: `by_image` documents from the image query, then `by_text` from the text query;
//! - **sample**: `sample` of the chosen documents, uniformly, from the pair's seeded stream.
use cm3_index::Hit;
use serde::{Deserialize, Serialize};

use crate::rng::{STREAM_SAMPLE, SplitMix64};

/// Which query found a retrieved document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FoundBy {
    Image,
    Text,
}

impl FoundBy {
    pub fn name(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::Text => "text",
        }
    }
}

/// One retrieved document of a pair.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Neighbour {
    pub id: u64,
    /// Relevance: the inner product of the query that found it with its bank vector.
    pub score: f32,
    pub found_by: FoundBy,
    /// In the subset sampled for the training example.
    pub sampled: bool,
}

/// The rules of [`choose`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rules {
    pub relevance: f32,
    pub by_image: usize,
    pub by_text: usize,
}

/// What [`choose`] made of the candidates.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Choice {
    pub neighbours: Vec<Neighbour>,
    /// How many fewer than asked each query gave.
    pub short_by_image: usize,
    pub short_by_text: usize,
}

impl Choice {
    /// Whether the candidates of `by` ran out before enough were chosen: if its search returned a
    /// full list, a longer one may help.
    pub fn short(&self, by: FoundBy) -> bool {
        match by {
            FoundBy::Image => self.short_by_image > 0,
            FoundBy::Text => self.short_by_text > 0,
        }
    }
}

/// Choose a pair's documents from its candidates (each list sorted by score, best first).
/// `skip(id)` says whether an id may never be retrieved for this pair (itself, its duplicates,
/// the excluded set); `similarity(a, b)` is the inner product of two bank documents.
pub fn choose(
    image_hits: &[Hit],
    text_hits: &[Hit],
    rules: &Rules,
    skip: impl Fn(u64) -> bool,
    similarity: impl Fn(u64, u64) -> f32,
) -> Choice {
    let mut out = Choice::default();
    for (hits, by, want) in [
        (image_hits, FoundBy::Image, rules.by_image),
        (text_hits, FoundBy::Text, rules.by_text),
    ] {
        let mut got = 0;
        for h in hits {
            if got == want {
                break;
            }
            // NaN scores fail `<=` and are skipped with the too-relevant ones.
            let relevant_enough = h.score <= rules.relevance;
            if !relevant_enough || skip(h.id) {
                continue;
            }
            let diverse = out
                .neighbours
                .iter()
                .all(|c| c.id != h.id && similarity(c.id, h.id) <= rules.relevance);
            if !diverse {
                continue;
            }
            out.neighbours.push(Neighbour {
                id: h.id,
                score: h.score,
                found_by: by,
                sampled: false,
            });
            got += 1;
        }
        match by {
            FoundBy::Image => out.short_by_image = want - got,
            FoundBy::Text => out.short_by_text = want - got,
        }
    }
    out
}

/// Mark `k` of the neighbours as sampled, uniformly without replacement (a partial Fisher–Yates
/// shuffle of their positions on the pair's own stream); all of them when there are at most `k`.
pub fn sample(neighbours: &mut [Neighbour], k: usize, seed: u64, pair: u64) {
    let n = neighbours.len();
    if n <= k {
        neighbours.iter_mut().for_each(|x| x.sampled = true);
        return;
    }
    let mut rng = SplitMix64::for_pair(seed, STREAM_SAMPLE, pair);
    let mut pos: Vec<usize> = (0..n).collect();
    for i in 0..k {
        let j = i + rng.below((n - i) as u64) as usize;
        pos.swap(i, j);
        neighbours[pos[i]].sampled = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(list: &[(u64, f32)]) -> Vec<Hit> {
        list.iter().map(|&(id, score)| Hit { id, score }).collect()
    }

    const RULES: Rules = Rules {
        relevance: 0.9,
        by_image: 2,
        by_text: 2,
    };

    #[test]
    fn applies_relevance_self_and_diversity_rules_in_order() {
        let image = hits(&[(1, 0.99), (2, 0.95), (3, 0.8), (4, 0.7), (5, 0.6)]);
        let text = hits(&[(3, 0.85), (6, 0.8), (7, 0.75), (8, 0.5)]);
        // 4 and 6 are near-copies of each other; 5 is the pair itself.
        let sim = |a: u64, b: u64| {
            if (a, b) == (4, 6) || (a, b) == (6, 4) {
                0.95
            } else {
                0.1
            }
        };
        let c = choose(&image, &text, &RULES, |id| id == 5, sim);
        let ids: Vec<(u64, FoundBy)> = c.neighbours.iter().map(|n| (n.id, n.found_by)).collect();
        // 1, 2: too relevant; 3, 4 by image; 3 already chosen, 6 a near-copy of 4: 7, 8 by text.
        assert_eq!(
            ids,
            [
                (3, FoundBy::Image),
                (4, FoundBy::Image),
                (7, FoundBy::Text),
                (8, FoundBy::Text)
            ]
        );
        assert_eq!((c.short_by_image, c.short_by_text), (0, 0));
    }

    #[test]
    fn records_shortfall() {
        let c = choose(&hits(&[(1, 0.5)]), &[], &RULES, |_| false, |_, _| 0.0);
        assert_eq!((c.short_by_image, c.short_by_text), (1, 2));
        assert!(c.short(FoundBy::Image) && c.short(FoundBy::Text));
    }

    #[test]
    fn sampling_is_seeded_and_exact_in_size() {
        let mk = || -> Vec<Neighbour> {
            (0..4)
                .map(|id| Neighbour {
                    id,
                    score: 0.5,
                    found_by: FoundBy::Image,
                    sampled: false,
                })
                .collect()
        };
        let mut a = mk();
        sample(&mut a, 3, 11, 99);
        assert_eq!(a.iter().filter(|n| n.sampled).count(), 3);
        let mut b = mk();
        sample(&mut b, 3, 11, 99);
        assert_eq!(a, b);
        // Over many pairs each position is left out about equally often.
        let mut left_out = [0u32; 4];
        for pair in 0..4_000 {
            let mut v = mk();
            sample(&mut v, 3, 11, pair);
            let i = v.iter().position(|n| !n.sampled).expect("one left out");
            left_out[i] += 1;
        }
        assert!(
            left_out.iter().all(|&c| (850..1150).contains(&c)),
            "{left_out:?}"
        );
        let mut few = mk();
        few.truncate(2);
        sample(&mut few, 3, 11, 1);
        assert!(few.iter().all(|n| n.sampled));
    }
}
