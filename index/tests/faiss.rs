//! The FAISS backend (cargo feature `faiss`): exact results equal to the flat index, IVF training
//! and incremental adds through the on-disk store, and clear errors.
#![cfg(feature = "faiss")]
mod common;

use std::collections::BTreeMap;

use cm3_index::faiss::FaissIndex;
use cm3_index::flat::FlatIndex;
use cm3_index::{IndexSpec, MipsIndex, SearchParams, Storage, store};
use common::clustered;

#[test]
fn faiss_flat_matches_our_flat_and_ivf_adds_incrementally() {
    let dim = 64;
    let base = clustered(4000, dim, 20, 11);
    let queries = clustered(50, dim, 20, 12);
    let ids: Vec<u64> = (0..4000).map(|i| 5_000_000 + i).collect();
    let mut ours = FlatIndex::new(dim, Storage::F32);
    ours.add(&ids, &base).expect("add");
    let mut theirs = FaissIndex::new(dim, "Flat").expect("factory");
    theirs.add(&ids, &base).expect("add");
    let p = SearchParams::top(10);
    let a = ours.search_batch(&queries, &p).expect("ours");
    let b = theirs.search_batch(&queries, &p).expect("faiss");
    for (x, y) in a.iter().zip(&b) {
        for (h, g) in x.iter().zip(y) {
            assert!((h.score - g.score).abs() < 1e-5);
        }
        assert_eq!(x[0].id, y[0].id);
    }
    // IVF: trained on the first part, the second part added to the trained lists, via the store.
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("ivf");
    let mut ivf = FaissIndex::new(dim, "IVF16,Flat").expect("factory");
    ivf.add(&ids[..2500], &base[..2500 * dim])
        .expect("train + add");
    let m1 = store::commit(&dir, &ivf, None, None, BTreeMap::new(), "t").expect("commit");
    let (_, mut loaded) = store::open(&dir).expect("open").expect("index");
    assert_eq!(
        loaded.spec(),
        IndexSpec::Faiss {
            factory: "IVF16,Flat".into()
        }
    );
    loaded.add(&ids[2500..], &base[2500 * dim..]).expect("add");
    store::commit(&dir, loaded.as_ref(), Some(&m1), None, BTreeMap::new(), "t").expect("commit");
    let (meta, loaded) = store::open(&dir).expect("open").expect("index");
    assert_eq!(meta.count, 4000);
    // A stored vector finds itself (nprobe 1 still visits its own list).
    let hits = loaded.search(&base[3999 * dim..], 1).expect("search");
    assert_eq!(hits[0].id, ids[3999]);
    let err = FaissIndex::new(dim, "NoSuchIndex")
        .expect_err("bad factory")
        .to_string();
    assert!(err.contains("NoSuchIndex"), "{err}");
}
