//! Documents and retrieval-augmented examples (paper Figures 8 and 9).
//!
//! A document is one caption-image pair: `<eos>`, then its text tokens, `<break>`, its image
//! tokens (or image first, then text, when the document is drawn as image→text). `<eos>` opens
//! every document, so the paper's zero-shot prompt `<eos> text <break>` is exactly how a
//! generation starts. An example is the sampled retrieved documents, in the order the caller
//! gives (the pack stage shuffles them per pair), followed by the query pair's document. The query
//! pair carries no extra weight.

use crate::masking::Specials;

/// One caption-image pair's tokens (ids in the vocabulary layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Doc<'a> {
    pub text: &'a [u32],
    pub image: &'a [u32],
}

impl Doc<'_> {
    /// Tokens of the document: `<eos>` + text `<break>` image, or image `<break>` text.
    pub fn tokens(&self, image_first: bool, sp: &Specials) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.token_count());
        self.write(&mut out, image_first, sp);
        out
    }

    /// Append the document's tokens to `out`.
    pub fn write(&self, out: &mut Vec<u32>, image_first: bool, sp: &Specials) {
        let (a, b) = if image_first {
            (self.image, self.text)
        } else {
            (self.text, self.image)
        };
        out.push(sp.eos);
        out.extend_from_slice(a);
        out.push(sp.brk);
        out.extend_from_slice(b);
    }

    /// Tokens of the document, `<eos>` and `<break>` included.
    pub fn token_count(&self) -> usize {
        self.text.len() + self.image.len() + 2
    }
}

/// An example before masking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub tokens: Vec<u32>,
    /// Retrieved documents kept, and dropped to fit.
    pub retrieved: usize,
    pub dropped: usize,
    /// Where the query's document starts in `tokens` (at its `<eos>`).
    pub query_start: usize,
}

/// How many tokens an example may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The query's document alone must fit in this (else there is no example).
    pub query: usize,
    /// Retrieved documents are kept, in order, while the whole example fits in this.
    pub total: usize,
}

/// The example of `query` with its `retrieved` documents. Documents at the end of `retrieved`
/// are dropped until the example fits in `budget.total` tokens; the query is never cut, so
/// `None` if the query alone does not fit in `budget.query`. `image_first[i]` orders document `i`
/// (the query is last).
pub fn build(
    retrieved: &[Doc<'_>],
    query: Doc<'_>,
    image_first: &[bool],
    budget: Budget,
    sp: &Specials,
) -> Option<Example> {
    let budget_total = budget.total;
    if query.token_count() > budget.query.min(budget.total) {
        return None;
    }
    let mut used = query.token_count();
    let mut keep = 0;
    for d in retrieved {
        if used + d.token_count() > budget_total {
            break;
        }
        used += d.token_count();
        keep += 1;
    }
    let order = |i: usize| image_first.get(i).copied().unwrap_or(false);
    let mut tokens = Vec::with_capacity(used);
    for (i, d) in retrieved[..keep].iter().enumerate() {
        d.write(&mut tokens, order(i), sp);
    }
    let query_start = tokens.len();
    query.write(&mut tokens, order(retrieved.len()), sp);
    Some(Example {
        tokens,
        retrieved: keep,
        dropped: retrieved.len() - keep,
        query_start,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp() -> Specials {
        Specials {
            pad: 0,
            eos: 1,
            brk: 2,
            infill: 4,
            sentinels: vec![5, 6],
            image_offset: 100,
        }
    }

    #[test]
    fn retrieved_documents_come_first_and_the_last_given_are_dropped() {
        let (t1, i1) = ([10, 11], [100, 101, 102]);
        let (t2, i2) = ([12], [103, 104, 105]);
        let (tq, iq) = ([13, 14], [106, 107, 108]);
        let docs = [
            Doc {
                text: &t1,
                image: &i1,
            },
            Doc {
                text: &t2,
                image: &i2,
            },
        ];
        let q = Doc {
            text: &tq,
            image: &iq,
        };
        let b = |n| Budget { query: n, total: n };
        let all = build(&docs, q, &[], b(100), &sp()).expect("fits");
        assert_eq!(
            all.tokens,
            vec![
                1, 10, 11, 2, 100, 101, 102, 1, 12, 2, 103, 104, 105, 1, 13, 14, 2, 106, 107, 108
            ]
        );
        assert_eq!((all.retrieved, all.dropped, all.query_start), (2, 0, 13));
        // Room for the query and one document: the last given is dropped.
        let one = build(&docs, q, &[], b(15), &sp()).expect("fits");
        assert_eq!((one.retrieved, one.dropped), (1, 1));
        assert_eq!(one.tokens.len(), 14);
        // The query alone does not fit: no example, never a cut query.
        assert_eq!(build(&docs, q, &[], b(6), &sp()), None);
        // Image first for the query.
        let flipped = build(&[], q, &[true], b(100), &sp()).expect("fits");
        assert_eq!(flipped.tokens, vec![1, 106, 107, 108, 2, 13, 14]);
    }
}
