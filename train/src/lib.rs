//! Training the CM3Leon decoder from a prepared dataset directory (`packed/` + `meta.json`):
//! next-token cross-entropy over everything but padding, AdamW with the paper's settings,
//! warmup then linear or cosine decay, global gradient clipping, gradient accumulation to a
//! batch given in tokens, validation, `metrics.jsonl`, atomic checkpoints and exact resume; a
//! run may start from a pretrained model (`--init-from`, the SFT stage).
pub mod backend;
pub mod config;
pub mod data;
pub mod error;
pub mod init;
pub mod run;

pub use backend::Backend;
pub use config::{Decay, LossOn, TRAIN_PRESETS, TrainConfig};
pub use error::{Result, TrainError};
pub use init::InitFrom;
pub use run::{TrainOptions, TrainReport, train};
