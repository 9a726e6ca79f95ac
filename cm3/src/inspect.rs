//! `cm3 inspect`: the manifest in human terms.
use std::collections::{HashMap, HashSet};
use std::path::Path;

use anyhow::Result;
use serde_json::json;

use cm3_core::{DatasetDir, Manifest};

pub fn run(dataset: &Path, as_json: bool) -> Result<()> {
    let d = DatasetDir::open(dataset)?;
    let m: Manifest = d.load_manifest()?;
    let pending = d.worker_manifests()?;
    if as_json {
        let pending: Vec<String> = pending.iter().map(|p| p.display().to_string()).collect();
        let out = json!({
            "dataset": d.root().display().to_string(),
            "manifest": m,
            "unmerged_worker_manifests": pending,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("dataset {}", d.root().display());
    if m.stages.is_empty() {
        println!("  no finished stage yet");
    }
    for (name, s) in &m.stages {
        let t = &s.totals;
        println!("stage {name} (cm3 {})", s.tool_version);
        println!("  inputs   {}", s.inputs.len());
        println!(
            "  shards   {}  ({:.1} MiB)",
            t.shards,
            t.bytes as f64 / (1 << 20) as f64
        );
        println!("  rows     {}", t.rows);
        println!("  rejects  {}", t.rejects);
        let mut reasons: Vec<(&String, &u64)> = t.rejects_by_reason.iter().collect();
        reasons.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (reason, n) in reasons {
            println!("    {reason:<22} {n}");
        }
        for (k, v) in &t.counters {
            println!("  {k}  {v}");
        }
        if let Some(obj) = s.config.as_object() {
            // Nested settings (an index's kind, augment's rules) print as `key.sub=value`;
            // unset ones (null) and deeper structures are left to --json.
            let mut cfg: Vec<String> = Vec::new();
            for (k, v) in obj {
                match v.as_object() {
                    None => cfg.push(format!("{k}={v}")),
                    Some(inner)
                        if inner.values().all(|x| !x.is_object() && !x.is_array())
                            && inner.len() <= 10 =>
                    {
                        cfg.extend(
                            inner
                                .iter()
                                .filter(|(_, v2)| !v2.is_null())
                                .map(|(k2, v2)| format!("{k}.{k2}={v2}")),
                        );
                    }
                    Some(_) => {}
                }
            }
            println!("  config   {}", cfg.join(" "));
        }
    }
    if !pending.is_empty() {
        println!(
            "{} unmerged worker manifest(s) in {}: run `cm3 manifest merge {}`",
            pending.len(),
            d.worker_manifest_dir().display(),
            d.root().display()
        );
    }
    Ok(())
}

/// `cm3 inspect <dataset> --neighbors <id>`: a pair and its retrieved documents.
pub fn neighbors(dataset: &Path, id: &str, as_json: bool) -> Result<()> {
    let id = crate::index::parse_id(id)?;
    let Some((_, record)) = cm3_augment::stage::stage_record(dataset)? else {
        anyhow::bail!(
            "{} has no retrieved documents yet: run `cm3 augment {}` first",
            dataset.display(),
            dataset.display()
        );
    };
    let Some(row) = cm3_augment::stage::find_row(dataset, id)? else {
        anyhow::bail!(
            "pair {id:016x} has no retrieved documents in {} (not a pair of it, or its shard is not \
             augmented yet)",
            dataset.display()
        );
    };
    let bank = if record.bank == "self" {
        dataset.to_path_buf()
    } else {
        std::path::PathBuf::from(&record.bank)
    };
    let own = cm3_index::stage::captions(dataset, &HashSet::from([id]))?;
    let wanted: HashSet<u64> = row.neighbours.iter().map(|n| n.id).collect();
    let captions = cm3_index::stage::captions(&bank, &wanted)?;
    let caption = |i: u64, from: &HashMap<u64, String>| from.get(&i).cloned().unwrap_or_default();
    if as_json {
        let nb: Vec<_> = row
            .neighbours
            .iter()
            .map(|n| {
                json!({
                    "id": format!("{:016x}", n.id),
                    "score": n.score,
                    "found_by": n.found_by.name(),
                    "sampled": n.sampled,
                    "caption": caption(n.id, &captions),
                })
            })
            .collect();
        let out = json!({
            "id": format!("{id:016x}"),
            "caption": caption(id, &own),
            "bank": record.bank,
            "bank_index": record.bank_index,
            "relevance": record.settings.relevance,
            "query_tokens": row.query_tokens,
            "dropped_tokens": row.dropped_tokens,
            "short_by_image": row.short_by_image,
            "short_by_text": row.short_by_text,
            "neighbors": nb,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("pair {id:016x}  {}", caption(id, &own));
    println!(
        "  bank {} ({}), relevance <= {}; query dropout removed {} of {} caption tokens",
        record.bank,
        record.bank_index,
        record.settings.relevance,
        row.dropped_tokens,
        row.query_tokens
    );
    if row.short_by_image + row.short_by_text > 0 {
        println!(
            "  fewer than asked: {} by image, {} by text",
            row.short_by_image, row.short_by_text
        );
    }
    println!(
        "  {:>2}  {:<5}  {:>6}  {:<7}  {:<16}  caption",
        "#", "by", "score", "sampled", "id"
    );
    for (i, n) in row.neighbours.iter().enumerate() {
        println!(
            "  {:>2}  {:<5}  {:>6.4}  {:<7}  {:016x}  {}",
            i + 1,
            n.found_by.name(),
            n.score,
            if n.sampled { "yes" } else { "no" },
            n.id,
            caption(n.id, &captions)
        );
    }
    Ok(())
}
