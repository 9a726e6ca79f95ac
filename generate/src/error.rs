/// Errors of generation, naming the input or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// A request that cannot be served (prompt too long, bad settings, missing tokenizer).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Model(#[from] cm3_model::ModelError),
    #[error(transparent)]
    Tokenize(#[from] cm3_tokenize::TokenizeError),
    #[error(transparent)]
    Train(#[from] cm3_train::TrainError),
    #[error(transparent)]
    Core(#[from] cm3_core::CoreError),
    #[error(transparent)]
    Embed(#[from] cm3_embed::EmbedError),
    #[error(transparent)]
    Index(#[from] cm3_index::IndexError),
    #[error(transparent)]
    Pack(#[from] cm3_pack::PackError),
}

pub type Result<T> = std::result::Result<T, GenerateError>;
