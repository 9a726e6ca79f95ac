//! Fixed-length sequences from variable-length examples.
//!
//! - `stream`: examples are concatenated and cut into blocks of the sequence length, as
//!   metaseq's document-to-sequence datasets do (an example may continue in the next sequence);
//!   only the last block is padded.
//! - `whole`: an example never crosses a sequence boundary; a sequence takes further whole
//!   examples while they fit, then padding.
//!
//! Every sequence records where examples start in it, so training can tell them apart.

use serde::{Deserialize, Serialize};

use crate::error::{PackError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    Stream,
    Whole,
}

/// A finished sequence: exactly `seq_len` tokens, and the examples that start in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequence {
    pub tokens: Vec<u32>,
    /// (offset in this sequence, example number) for every example that starts here.
    pub starts: Vec<(u32, u64)>,
    /// Padding tokens at the end.
    pub padding: u32,
}

/// Packs examples in the order given; finished sequences are handed to the caller.
#[derive(Debug)]
pub struct Packer {
    seq_len: usize,
    policy: Policy,
    pad: u32,
    current: Vec<u32>,
    starts: Vec<(u32, u64)>,
    examples: u64,
}

impl Packer {
    pub fn new(seq_len: usize, policy: Policy, pad: u32) -> Result<Self> {
        if seq_len < 2 {
            return Err(PackError::Invalid(format!(
                "sequence length {seq_len} is too short"
            )));
        }
        Ok(Self {
            seq_len,
            policy,
            pad,
            current: Vec::with_capacity(seq_len),
            starts: Vec::new(),
            examples: 0,
        })
    }

    /// Add one example; returns the sequences it completed.
    pub fn push(&mut self, example: &[u32]) -> Result<Vec<Sequence>> {
        let mut done = Vec::new();
        let id = self.examples;
        self.examples += 1;
        match self.policy {
            Policy::Whole => {
                if example.len() > self.seq_len {
                    return Err(PackError::Invalid(format!(
                        "an example of {} tokens cannot fit whole in sequences of {}",
                        example.len(),
                        self.seq_len
                    )));
                }
                if self.current.len() + example.len() > self.seq_len {
                    done.push(self.flush());
                }
                self.starts.push((self.current.len() as u32, id));
                self.current.extend_from_slice(example);
                if self.current.len() == self.seq_len {
                    done.push(self.flush());
                }
            }
            Policy::Stream => {
                self.starts.push((self.current.len() as u32, id));
                let mut rest = example;
                while !rest.is_empty() {
                    let room = self.seq_len - self.current.len();
                    let (now, later) = rest.split_at(room.min(rest.len()));
                    self.current.extend_from_slice(now);
                    rest = later;
                    if self.current.len() == self.seq_len {
                        done.push(self.flush());
                    }
                }
            }
        }
        Ok(done)
    }

    /// Pad and return the sequence in progress, if any.
    pub fn finish(&mut self) -> Option<Sequence> {
        (!self.current.is_empty()).then(|| self.flush())
    }

    fn flush(&mut self) -> Sequence {
        let padding = (self.seq_len - self.current.len()) as u32;
        self.current.resize(self.seq_len, self.pad);
        Sequence {
            tokens: std::mem::replace(&mut self.current, Vec::with_capacity(self.seq_len)),
            starts: std::mem::take(&mut self.starts),
            padding,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(policy: Policy, examples: &[Vec<u32>]) -> Vec<Sequence> {
        let mut p = Packer::new(5, policy, 0).expect("packer");
        let mut out = Vec::new();
        for e in examples {
            out.extend(p.push(e).expect("push"));
        }
        out.extend(p.finish());
        out
    }

    #[test]
    fn stream_cuts_blocks_and_pads_only_the_last() {
        let s = pack(Policy::Stream, &[vec![1, 2, 3], vec![4, 5, 6, 7], vec![8]]);
        let tokens: Vec<_> = s.iter().map(|s| s.tokens.clone()).collect();
        assert_eq!(tokens, vec![vec![1, 2, 3, 4, 5], vec![6, 7, 8, 0, 0]]);
        assert_eq!(s[0].starts, vec![(0, 0), (3, 1)]);
        assert_eq!(s[1].starts, vec![(2, 2)]);
        assert_eq!((s[0].padding, s[1].padding), (0, 2));
    }

    #[test]
    fn whole_never_splits_an_example() {
        let s = pack(
            Policy::Whole,
            &[
                vec![1, 2, 3],
                vec![4, 5, 6, 7],
                vec![8],
                vec![9, 9, 9, 9, 9],
            ],
        );
        let tokens: Vec<_> = s.iter().map(|s| s.tokens.clone()).collect();
        assert_eq!(
            tokens,
            vec![
                vec![1, 2, 3, 0, 0],
                vec![4, 5, 6, 7, 8],
                vec![9, 9, 9, 9, 9]
            ]
        );
        assert_eq!(s[1].starts, vec![(0, 1), (4, 2)]);
        let mut p = Packer::new(5, Policy::Whole, 0).expect("packer");
        assert!(p.push(&[1; 6]).is_err());
    }
}
