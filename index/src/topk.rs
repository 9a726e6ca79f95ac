//! A bounded selection of the `k` best (score, position) pairs.
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

#[derive(Debug, Clone, Copy, PartialEq)]
struct Entry {
    score: f32,
    pos: usize,
}

impl Eq for Entry {}

impl Ord for Entry {
    /// Better = higher score, then lower position (so ties resolve the same way every time).
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.pos.cmp(&self.pos))
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The `k` best entries seen so far: a min-heap whose root is the worst kept entry.
#[derive(Debug, Clone)]
pub struct TopK {
    k: usize,
    heap: BinaryHeap<Reverse<Entry>>,
}

impl TopK {
    pub fn new(k: usize) -> Self {
        Self {
            k,
            // `k` may come from a user's flag: the heap grows as hits arrive, it is not
            // allocated for `k` up front.
            heap: BinaryHeap::with_capacity(k.min(4096) + 1),
        }
    }

    /// Whether an entry with this score could still enter (cheap test before filters).
    #[inline]
    pub fn would_accept(&self, score: f32) -> bool {
        self.k > 0
            && (self.heap.len() < self.k || self.heap.peek().is_some_and(|w| score >= w.0.score))
    }

    /// No score below this can enter (`would_accept` is false below it): minus infinity while
    /// the heap is not full, infinity when `k` is 0.
    #[inline]
    pub fn floor(&self) -> f32 {
        if self.k == 0 {
            f32::INFINITY
        } else if self.heap.len() < self.k {
            f32::NEG_INFINITY
        } else {
            self.heap.peek().map_or(f32::NEG_INFINITY, |w| w.0.score)
        }
    }

    #[inline]
    pub fn push(&mut self, score: f32, pos: usize) {
        if self.k == 0 {
            return;
        }
        let e = Entry { score, pos };
        if self.heap.len() < self.k {
            self.heap.push(Reverse(e));
        } else if let Some(mut worst) = self.heap.peek_mut()
            && e > worst.0
        {
            *worst = Reverse(e);
        }
    }

    pub fn merge(mut self, other: TopK) -> TopK {
        for Reverse(e) in other.heap {
            self.push(e.score, e.pos);
        }
        self
    }

    /// (score, position), best first.
    pub fn into_sorted(self) -> Vec<(f32, usize)> {
        let mut v: Vec<Entry> = self.heap.into_iter().map(|r| r.0).collect();
        v.sort_by(|a, b| b.cmp(a));
        v.into_iter().map(|e| (e.score, e.pos)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_best_and_breaks_ties_by_position() {
        let mut t = TopK::new(3);
        for (i, s) in [0.1, 0.9, 0.5, 0.9, 0.3, 0.7].into_iter().enumerate() {
            t.push(s, i);
        }
        assert_eq!(t.into_sorted(), vec![(0.9, 1), (0.9, 3), (0.7, 5)]);
        let mut a = TopK::new(2);
        a.push(0.2, 0);
        let mut b = TopK::new(2);
        b.push(0.8, 1);
        b.push(0.1, 2);
        assert_eq!(a.merge(b).into_sorted(), vec![(0.8, 1), (0.2, 0)]);
        assert!(TopK::new(0).into_sorted().is_empty());
        // A user's k is not an allocation: usize::MAX keeps everything pushed.
        let mut all = TopK::new(usize::MAX);
        all.push(0.5, 7);
        assert_eq!(all.into_sorted(), vec![(0.5, 7)]);
    }
}
