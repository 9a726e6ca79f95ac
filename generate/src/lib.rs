//! Generation with a trained CM3Leon decoder (paper §3.1): incremental decoding over a
//! key/value cache allocated once per generation, the conditional and unconditional streams as
//! rows of one batch, classifier-free guidance, contrastive decoding CD-K, temperature / top-k /
//! top-p sampling, and modality constraints; the tasks text → image, image → text, infilling and
//! editing, whose prompts ([`prompts`]) are forms of the training data (the unconditional streams
//! mask a caption with the sentinel training uses, never `<mask>`).
pub mod clip;
pub mod decode;
pub mod error;
pub mod prompts;
pub mod retrieval;
pub mod sampling;
pub mod tasks;

pub use clip::{ClipScorer, ImageInput};
pub use decode::{Guidance, Request, Target, generate};
pub use error::{GenerateError, Result};
pub use retrieval::{Retrieved, Retriever};
pub use sampling::{GUIDED_MIN_P, Sampling};
pub use tasks::{Generator, Settings};
