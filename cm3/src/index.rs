//! `cm3 index build` and `cm3 index search`: the memory bank of a dataset, or of raw vectors.
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use cm3_core::fsio::{sha256_file, write_atomic};
use cm3_embed::hub::Hub;
use cm3_embed::npy::{self, Dtype};
use cm3_embed::onnx::{EMBED_DIM, TextEncoder, VisionEncoder, model_path, normalize_rows};
use cm3_embed::preprocess::{CLIP_SIZE, preprocess_bytes};
use cm3_embed::{ClipTokenizer, stage::EmbedConfig};
use cm3_index::spec::{DEFAULT_EF_CONSTRUCTION, DEFAULT_M};
use cm3_index::stage::{BuildOptions, IndexConfig};
use cm3_index::vectors::{check_unit_rows, read_ids, read_vectors};
use cm3_index::{
    Hit, IndexSpec, MipsIndex, SearchParams, Storage, VectorSet, new_index_in_parts, stage, store,
};

#[derive(Subcommand, Debug)]
pub(crate) enum IndexCommand {
    /// Index a dataset's embeddings (only the shards not indexed yet), or raw vectors (--vectors).
    Build(Box<BuildArgs>),
    /// Search a dataset's index by text, image or pair id, or a raw index by a .npy of queries.
    Search(Box<SearchArgs>),
}

#[derive(Args, Debug)]
pub(crate) struct BuildArgs {
    /// The dataset whose embeddings to index (writes <dataset>/index/<set>/).
    #[arg(required_unless_present = "vectors")]
    pub dataset: Option<PathBuf>,
    /// Build settings file (TOML or JSON: vector_set, index = { kind = "flat" | "hnsw" | "faiss",
    /// storage, m, ef_construction, factory }); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Which vectors: doc (the paper's document vector), image or text [default: doc].
    #[arg(long)]
    pub set: Option<VectorSet>,
    /// flat (exact), hnsw, or faiss:<index_factory string> (feature `faiss`) [default: flat].
    #[arg(long)]
    pub kind: Option<String>,
    /// Flat index storage: f16 (half the memory) or f32 [default: f16].
    #[arg(long)]
    pub storage: Option<Storage>,
    /// HNSW links per node [default: 32].
    #[arg(long)]
    pub m: Option<usize>,
    /// HNSW candidate list while building [default: 200].
    #[arg(long)]
    pub ef_construction: Option<usize>,
    /// Build the bank in parts of at most this many vectors, each a complete index of --kind,
    /// so that the build holds one part in memory (searches ask every part) [default: one
    /// index].
    #[arg(long)]
    pub part_rows: Option<usize>,
    /// Refuse vectors that are not unit-norm instead of normalising them (with a warning).
    #[arg(long)]
    pub strict: bool,
    /// Discard the existing index and build it again.
    #[arg(long)]
    pub rebuild: bool,
    /// Raw mode: vectors to index (.npy float32/float16 [n, d], or .fvecs).
    #[arg(long, requires = "out", conflicts_with = "dataset")]
    pub vectors: Option<PathBuf>,
    /// Raw mode: ids of the vectors (.npy int64/uint64 [n]) [default: row numbers].
    #[arg(long, requires = "vectors")]
    pub ids: Option<PathBuf>,
    /// Raw mode: the index directory to write.
    #[arg(long, requires = "vectors")]
    pub out: Option<PathBuf>,
    /// Raw mode: add the vectors to the index already in --out.
    #[arg(long, requires = "vectors")]
    pub append: bool,
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Args, Debug)]
pub(crate) struct SearchArgs {
    /// A dataset (searches <dataset>/index/<set>/) or an index directory made with --vectors.
    pub target: PathBuf,
    /// Query by text (embedded with the CLIP text encoder that made the dataset's embeddings).
    #[arg(long, group = "query")]
    pub text: Option<String>,
    /// Query by an image file.
    #[arg(long, group = "query")]
    pub image: Option<PathBuf>,
    /// Query by a pair of the dataset (its id in hex, as `cm3` prints it).
    #[arg(long, group = "query")]
    pub id: Option<String>,
    /// Query by the vectors of a .npy / .fvecs file (one query a row).
    #[arg(long, group = "query")]
    pub queries: Option<PathBuf>,
    /// Results per query.
    #[arg(short, long, default_value_t = 10)]
    pub k: usize,
    /// Which index of the dataset [default: doc].
    #[arg(long, default_value = "doc")]
    pub set: VectorSet,
    /// Only results scoring at most this (the paper keeps relevance ≤ 0.9 to skip near-copies).
    #[arg(long)]
    pub max_score: Option<f32>,
    /// Only results scoring at least this.
    #[arg(long)]
    pub min_score: Option<f32>,
    /// Leave the query pair itself out of the results (with --id).
    #[arg(long)]
    pub exclude_self: bool,
    /// HNSW candidate list while searching (higher: better recall, slower) [default: 128].
    #[arg(long)]
    pub ef_search: Option<usize>,
    /// With --queries: write the neighbour ids here (.npy int64 [n, k], -1 where fewer than k).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// With --queries: write the scores here (.npy float32 [n, k], -inf where fewer than k).
    #[arg(long)]
    pub scores: Option<PathBuf>,
    /// Print results as JSON.
    #[arg(long)]
    pub json: bool,
    #[arg(long, default_value = "hf:Qdrant/clip-ViT-B-32-text")]
    pub text_model: String,
    #[arg(long, default_value = "hf:Qdrant/clip-ViT-B-32-vision")]
    pub image_model: String,
}

pub(crate) fn run(cmd: IndexCommand) -> Result<()> {
    match cmd {
        IndexCommand::Build(a) => build(*a),
        IndexCommand::Search(a) => search(*a),
    }
}

fn build_config(a: &BuildArgs) -> Result<IndexConfig> {
    let mut cfg: IndexConfig = match &a.config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            if p.extension().is_some_and(|e| e == "json") {
                serde_json::from_str(&text).with_context(|| format!("{}", p.display()))?
            } else {
                toml::from_str(&text).with_context(|| format!("{}", p.display()))?
            }
        }
        None => IndexConfig::default(),
    };
    if let Some(s) = a.set {
        cfg.vector_set = s;
    }
    if a.part_rows.is_some() {
        cfg.part_rows = a.part_rows;
    }
    let (storage, m, efc) = match &cfg.index {
        IndexSpec::Flat { storage } => (*storage, DEFAULT_M, DEFAULT_EF_CONSTRUCTION),
        IndexSpec::Hnsw { m, ef_construction } => (Storage::default(), *m, *ef_construction),
        IndexSpec::Faiss { .. } => (Storage::default(), DEFAULT_M, DEFAULT_EF_CONSTRUCTION),
    };
    let kind = match (&a.kind, &cfg.index) {
        (Some(k), _) => k.clone(),
        (None, IndexSpec::Flat { .. }) => "flat".into(),
        (None, IndexSpec::Hnsw { .. }) => "hnsw".into(),
        (None, IndexSpec::Faiss { factory }) => format!("faiss:{factory}"),
    };
    cfg.index = IndexSpec::parse(
        &kind,
        a.storage.unwrap_or(storage),
        a.m.unwrap_or(m),
        a.ef_construction.unwrap_or(efc),
    )?;
    Ok(cfg)
}

fn build(a: BuildArgs) -> Result<()> {
    let config = build_config(&a)?;
    if let Some(vectors) = &a.vectors {
        let out = a.out.as_deref().context("--vectors needs --out")?;
        return build_raw(vectors, a.ids.as_deref(), out, &config, &a);
    }
    let dataset = a
        .dataset
        .clone()
        .context("give a dataset, or --vectors with --out")?;
    let report = stage::build(&BuildOptions {
        dataset: dataset.clone(),
        config,
        rebuild: a.rebuild,
        strict: a.strict,
        progress: !a.no_progress,
    })?;
    if report.added_shards == 0 {
        eprintln!(
            "index: up to date: {} vectors from {} shard(s) in {} ({})",
            report.total_rows,
            report.total_shards,
            report.index_dir.display(),
            report.spec
        );
    } else {
        eprintln!(
            "index: added {} vectors from {} new shard(s) in {:.2} s; {} ({}) now holds {} vectors \
             from {} shard(s), generation {}",
            report.added_rows,
            report.added_shards,
            report.seconds,
            report.index_dir.display(),
            report.spec,
            report.total_rows,
            report.total_shards,
            report.generation
        );
    }
    if report.normalised > 0 {
        eprintln!(
            "index: {} vector(s) were not unit-norm and were normalised (--strict refuses them)",
            report.normalised
        );
    }
    Ok(())
}

fn build_raw(
    vectors: &Path,
    ids: Option<&Path>,
    out: &Path,
    config: &IndexConfig,
    a: &BuildArgs,
) -> Result<()> {
    let started = Instant::now();
    let spec = &config.index;
    let mut v = read_vectors(vectors)?;
    let ids: Vec<u64> = match ids {
        Some(p) => read_ids(p)?,
        None => (0..v.rows() as u64).collect(),
    };
    if ids.len() != v.rows() {
        bail!(
            "{}: {} ids for {} vectors in {}",
            a.ids.as_deref().unwrap_or(Path::new("ids")).display(),
            ids.len(),
            v.rows(),
            vectors.display()
        );
    }
    let mut seen = HashSet::with_capacity(ids.len());
    if let Some(d) = ids.iter().find(|i| !seen.insert(**i)) {
        bail!(
            "id {d} appears more than once in the ids of {}",
            vectors.display()
        );
    }
    let norm = check_unit_rows(&vectors.display().to_string(), &mut v.data, v.dim, a.strict)?;
    if norm.normalised > 0 {
        eprintln!(
            "index: {} vector(s) were not unit-norm and were normalised (--strict refuses them)",
            norm.normalised
        );
    }
    if a.rebuild {
        store::remove(out)?;
    }
    let existing = store::open(out)?;
    let (prev, mut index): (Option<store::IndexMeta>, Box<dyn MipsIndex>) = match existing {
        Some((meta, index)) => {
            if !a.append {
                bail!(
                    "{} already holds an index ({} vectors): pass --append to add to it, or \
                     --rebuild to replace it",
                    out.display(),
                    meta.count
                );
            }
            if &meta.spec != spec {
                bail!(
                    "{} holds a {} index, not {}: pass --rebuild to replace it",
                    out.display(),
                    meta.spec,
                    spec
                );
            }
            if meta.vector_set.is_some() {
                bail!(
                    "{} is a dataset's index: use `cm3 index build <dataset>`",
                    out.display()
                );
            }
            if meta.part_rows != config.part_rows {
                bail!(
                    "{} holds an index in parts of {:?} vectors, not {:?}: pass --rebuild to \
                     replace it",
                    out.display(),
                    meta.part_rows,
                    config.part_rows
                );
            }
            (Some(meta), index)
        }
        None => (None, new_index_in_parts(spec, v.dim, config.part_rows)?),
    };
    if index.dim() != v.dim {
        bail!(
            "{}: vectors have dimension {}, the index in {} has {}",
            vectors.display(),
            v.dim,
            out.display(),
            index.dim()
        );
    }
    index.add(&ids, &v.data)?;
    // The index holds its own copy now; saving it must not hold a second one.
    let dim = v.dim;
    drop(v);
    let meta = store::commit(
        out,
        index.as_ref(),
        prev.as_ref(),
        None,
        Default::default(),
        "index",
    )?;
    eprintln!(
        "index: {} vectors of dimension {} added in {:.2} s; {} ({}) holds {}",
        ids.len(),
        dim,
        started.elapsed().as_secs_f64(),
        out.display(),
        meta.spec,
        meta.count
    );
    Ok(())
}

pub(crate) fn parse_id(s: &str) -> Result<u64> {
    let t = s.trim_start_matches("0x");
    u64::from_str_radix(t, 16).with_context(|| format!("`{s}` is not a pair id (16 hex digits)"))
}

/// The embed stage's record of which models made the dataset's vectors.
fn embed_config(dataset: &Path) -> Result<EmbedConfig> {
    let m = cm3_core::DatasetDir::open(dataset)?.load_manifest()?;
    let rec = m.stages.get(cm3_embed::stage::STAGE).with_context(|| {
        format!(
            "{} has no embeddings: run `cm3 embed` first",
            dataset.display()
        )
    })?;
    Ok(serde_json::from_value(rec.config.clone())?)
}

/// Refuse a query model other than the one that made the index: its vectors live in another space.
fn check_model(resolved: &Path, recorded: &str, flag: &str) -> Result<()> {
    let file = model_path(resolved);
    let sha = sha256_file(&file)?.sha256;
    if sha != recorded {
        bail!(
            "{} is not the model that made this dataset's embeddings (sha256 {}…, the dataset's is \
             {}…): give the same model with {flag}",
            file.display(),
            &sha[..12],
            &recorded[..recorded.len().min(12)]
        );
    }
    Ok(())
}

/// Largest `-k` and `--ef-search` accepted: both size allocations (the output is n × k).
const MAX_SEARCH_WIDTH: usize = 1 << 20;

fn search(a: SearchArgs) -> Result<()> {
    if a.k > MAX_SEARCH_WIDTH || a.ef_search.is_some_and(|e| e > MAX_SEARCH_WIDTH) {
        bail!(
            "-k {} / --ef-search {}: each is at most {MAX_SEARCH_WIDTH}",
            a.k,
            a.ef_search.map_or("unset".to_string(), |e| e.to_string())
        );
    }
    let is_dataset = a.target.join("manifest.json").exists();
    let params = SearchParams {
        k: a.k,
        min_score: a.min_score,
        max_score: a.max_score,
        exclude: None,
        ef_search: a.ef_search,
    };
    if let Some(qpath) = &a.queries {
        let index = if is_dataset {
            stage::open_dataset_index(&a.target, a.set)?.1
        } else {
            store::open(&a.target)?
                .with_context(|| format!("{} holds no index (no INDEX.json)", a.target.display()))?
                .1
        };
        return search_raw(index.as_ref(), qpath, &params, &a);
    }
    if !is_dataset {
        bail!(
            "{} is not a dataset (no manifest.json): an index made with --vectors is searched with --queries",
            a.target.display()
        );
    }
    let (_, index) = stage::open_dataset_index(&a.target, a.set)?;
    let mut exclude = HashSet::new();
    let query: Vec<f32> = if let Some(text) = &a.text {
        let cfg = embed_config(&a.target)?;
        let model = Hub::from_env().resolve(&a.text_model)?;
        check_model(&model, &cfg.text_model_sha256, "--text-model")?;
        let mut enc = TextEncoder::load(&model, 0)?;
        let (ids, _) = ClipTokenizer::openai().tokenize_77(text);
        let mut v = enc.embed(&ids, 1)?;
        normalize_rows(&mut v, EMBED_DIM);
        v
    } else if let Some(image) = &a.image {
        let cfg = embed_config(&a.target)?;
        let model = Hub::from_env().resolve(&a.image_model)?;
        check_model(&model, &cfg.image_model_sha256, "--image-model")?;
        let mut enc = VisionEncoder::load(&model, 0)?;
        let bytes = std::fs::read(image).with_context(|| format!("reading {}", image.display()))?;
        let px =
            preprocess_bytes(&bytes, CLIP_SIZE).with_context(|| format!("{}", image.display()))?;
        let mut v = enc.embed(px, 1)?;
        normalize_rows(&mut v, EMBED_DIM);
        v
    } else if let Some(id) = &a.id {
        let id = parse_id(id)?;
        if a.exclude_self {
            exclude.insert(id);
        }
        stage::lookup_vector(&a.target, a.set, id)?
    } else {
        bail!("give a query: --text, --image, --id or --queries");
    };
    if query.len() != index.dim() {
        bail!(
            "the query has dimension {}, the index {}",
            query.len(),
            index.dim()
        );
    }
    let params = SearchParams {
        exclude: (!exclude.is_empty()).then_some(&exclude),
        ..params
    };
    let hits = index.search_with(&query, &params)?;
    let wanted: HashSet<u64> = hits.iter().map(|h| h.id).collect();
    let captions = stage::captions(&a.target, &wanted)?;
    if a.json {
        let rows: Vec<_> = hits
            .iter()
            .map(|h| {
                serde_json::json!({
                    "id": format!("{:016x}", h.id),
                    "score": h.score,
                    "caption": captions.get(&h.id),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        for (rank, h) in hits.iter().enumerate() {
            println!(
                "{:>3}  {:.4}  {:016x}  {}",
                rank + 1,
                h.score,
                h.id,
                captions.get(&h.id).map_or("", String::as_str)
            );
        }
    }
    Ok(())
}

fn search_raw(
    index: &dyn MipsIndex,
    qpath: &Path,
    params: &SearchParams<'_>,
    a: &SearchArgs,
) -> Result<()> {
    let mut q = read_vectors(qpath)?;
    if q.dim != index.dim() {
        bail!(
            "{}: queries have dimension {}, the index {}",
            qpath.display(),
            q.dim,
            index.dim()
        );
    }
    // Scores are cosine similarities: queries are normalised like the stored vectors.
    check_unit_rows(&qpath.display().to_string(), &mut q.data, q.dim, false)?;
    let started = Instant::now();
    let hits = index.search_batch(&q.data, params)?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "search: {} queries, k = {}, in {secs:.3} s ({:.1} queries/s, {} threads)",
        hits.len(),
        a.k,
        hits.len() as f64 / secs,
        rayon::current_num_threads()
    );
    if a.out.is_none() && a.scores.is_none() {
        for (qi, row) in hits.iter().enumerate() {
            let line: Vec<String> = row
                .iter()
                .map(|h| format!("{}:{:.4}", h.id, h.score))
                .collect();
            println!("{qi}\t{}", line.join(" "));
        }
        return Ok(());
    }
    let k = a.k;
    let n = hits.len();
    if let Some(out) = &a.out {
        write_atomic(out, &neighbours_npy(&hits, k), "search")?;
    }
    if let Some(out) = &a.scores {
        let scores: Vec<f32> = hits
            .iter()
            .flat_map(|row| {
                (0..k).map(move |j| row.get(j).map_or(f32::NEG_INFINITY, |h: &Hit| h.score))
            })
            .collect();
        write_atomic(out, &npy::encode_f32(&[n, k], &scores), "search")?;
    }
    Ok(())
}

/// Neighbour ids as int64 [n, k] with -1 padding (FAISS's convention), or as uint64 with
/// u64::MAX padding when an id does not fit in int64.
fn neighbours_npy(hits: &[Vec<Hit>], k: usize) -> Vec<u8> {
    let fits = hits.iter().flatten().all(|h| h.id <= i64::MAX as u64);
    let dtype = if fits { Dtype::I64 } else { Dtype::U64 };
    let mut out = npy::header(dtype, &[hits.len(), k]);
    for row in hits {
        for j in 0..k {
            // u64::MAX has the bytes of -1 as int64.
            let v = row.get(j).map_or(u64::MAX, |h| h.id);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out
}
