//! Tokenisation for CM3Leon (paper §2.1): a byte-level BPE for text, trained on the dataset's own
//! captions (56,320 entries by default, the special tokens reserved first), the VQ image
//! tokenizer (taming-transformers' GumbelVQ f8, in `cm3-model`), the one vocabulary layout
//! ([`cm3_core::vocab`]) that puts the image codes after the text ids, and the `tokenize` stage.

pub mod error;
pub mod image;
pub mod output;
pub mod stage;
pub mod text;
pub mod train_image;
pub mod train_text;

pub use error::{Result, TokenizeError};
pub use image::ImageTokenizer;
pub use stage::{TokenizeConfig, TokenizeOptions, TokenizeReport};
pub use text::{TextTokenizer, TextTokenizerConfig, TrainTextReport};
pub use train_image::{IMAGE_TOKENIZER, TrainImageOptions, TrainImageReport, train_image};
pub use train_text::{TEXT_TOKENIZER, TrainTextOptions, TrainTextRecord, train_text};
