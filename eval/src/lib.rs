//! The paper's evaluation. Each metric equals the implementation the field reports with, and is
//! tested against that implementation's own output (fixtures under `tests/fixtures/`):
//!
//! - [`captions`]: CIDEr-D, BLEU-1..4 and ROUGE-L as pycocoevalcap 1.2 computes them, after its
//!   PTB tokenisation (Stanford's `PTBTokenizer`, reproduced in Rust);
//! - [`vqa`]: VQA accuracy as the official `vqaEval.py` computes it;
//! - [`fid`]: the Fréchet Inception distance of pytorch-fid (Inception-v3 pool features through
//!   ONNX Runtime, the distance in f64);
//! - [`clip_score`]: torchmetrics' CLIP score, 100 · max(cos, 0) averaged.

pub mod captions;
pub mod clip_score;
mod error;
pub mod fid;
mod files;
pub mod vqa;
pub mod zero_shot;

pub use error::{EvalError, Result};
