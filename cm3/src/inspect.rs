//! `cm3 inspect`: the manifest in human terms.
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
            // Nested settings (an index's kind and parameters) print as `key.sub=value`; large
            // maps (ingest's column names) are left to --json.
            let mut cfg: Vec<String> = Vec::new();
            for (k, v) in obj {
                match v.as_object() {
                    None => cfg.push(format!("{k}={v}")),
                    Some(inner)
                        if inner.values().all(|x| !x.is_object() && !x.is_array())
                            && inner.len() <= 4 =>
                    {
                        cfg.extend(inner.iter().map(|(k2, v2)| format!("{k}.{k2}={v2}")));
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
