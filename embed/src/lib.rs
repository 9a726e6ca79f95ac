//! The paper's dense retriever: "We split the multi-modal document into a text part and an image
//! part, encode them separately using off-the-shelf frozen CLIP text and image encoders."
//!
//! So far: OpenAI CLIP's BPE tokenizer ([`ClipTokenizer`]), matching `clip/simple_tokenizer.py`,
//! and CLIP's image preprocessing ([`preprocess`]), matching PIL + torchvision.

pub mod clip_tokenizer;
pub mod error;
mod ftfy;
pub mod hub;
pub mod npy;
pub mod onnx;
pub mod preprocess;
pub mod stage;

pub use clip_tokenizer::{CONTEXT_LENGTH, ClipTokenizer, END_OF_TEXT, START_OF_TEXT};
pub use error::{EmbedError, Result};
