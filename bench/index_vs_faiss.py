"""Benchmark driver: `cm3 index` against FAISS (faiss-cpu) on the same vectors, machine and threads.

For each vector set: build time, queries/s (1,000 queries in one batch, k = 10), recall@10 against
exact search, and peak memory: for FAISS the max RSS of its one process (it builds and searches),
for cm3 the max RSS of the process that builds and of the one that searches (a saved index).
FAISS runs in child Python processes so that its memory is measured the same way as cm3's.

One HNSW build's recall@10 is one draw: which points get which level, and the insertion order,
move it: at efSearch 128 on 100k, 0.7592 to 0.7651 for FAISS and 0.7545 to 0.7695 for cm3 across
six orders of the same vectors. With --orders K (K > 1) both libraries also build on K - 1
seeded permutations of the same vectors, and the recall comparison is the mean over the K orders
of each (time and memory stay those of the first build).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd, env=None):
    """Run a command; return (seconds, max RSS in MiB, stdout, stderr)."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out, err = p.communicate()
    secs = time.perf_counter() - t
    # ru_maxrss of this child alone: wait4 was done by communicate, so use the children's total delta.
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{err.decode()}")
    return secs, out.decode(), err.decode()


def timed_rss(cmd):
    """Run under /usr/bin/time to get the child's own peak RSS."""
    full = ["/usr/bin/time", "-f", "MAXRSS_KB=%M"] + cmd
    secs, out, err = run(full)
    kb = [int(l.split("=")[1]) for l in err.splitlines() if l.startswith("MAXRSS_KB=")][-1]
    return secs, kb / 1024, out, err


def clustered(n, dim, clusters, seed):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    x = centres[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def read_fvecs(path):
    a = np.fromfile(path, dtype=np.int32)
    d = a[0]
    x = a.reshape(-1, d + 1)[:, 1:].copy().view(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def recall(found, truth, k=10):
    return float(np.mean([len(set(f[:k]) & set(t[:k])) / k for f, t in zip(found, truth)]))


def hnsw_orders(a, name, work, base, qpath, truth, faiss, rows):
    """Recall@10 of HNSW builds on --orders orders of `base` (the first as given, then seeded
    permutations), by library and efSearch; the first order's recalls are read from `rows`."""
    efs = [int(e) for e in a.ef_search.split(",")]
    got = {lib: {ef: [] for ef in efs} for lib in ("cm3", "faiss")}
    for r in rows:
        for ef in efs:
            if r[0] == name and r[1] == f"cm3 hnsw M={a.m} ef={ef}":
                got["cm3"][ef].append(r[4])
            if r[0] == name and r[1] == f"faiss IndexHNSWFlat M={a.m} ef={ef}":
                got["faiss"][ef].append(r[4])
    for o in range(1, a.orders):
        perm = np.random.default_rng(1000 + o).permutation(len(base))
        ppath = os.path.join(work, f"{name}-base-order{o}.npy")
        np.save(ppath, np.ascontiguousarray(base[perm]).astype(np.float32))
        _, _, found = faiss("hnsw", a.ef_search, bpath=ppath)
        for ef in efs:
            got["faiss"][ef].append(recall(perm[found[str(ef)]], truth))
        idx = os.path.join(work, f"{name}-cm3-hnsw-order{o}")
        bsecs, _, _, _ = timed_rss([a.cm3, "-q", "index", "build", "--vectors", ppath, "--kind", "hnsw", "--m", str(a.m),
                                    "--ef-construction", str(a.ef_construction), "--out", idx, "--rebuild"])
        line = []
        for ef in efs:
            nout = os.path.join(work, f"{name}-cm3-hnsw-order{o}-{ef}-n.npy")
            run([a.cm3, "-q", "index", "search", idx, "--queries", qpath, "-k", "10", "--ef-search", str(ef), "--out", nout])
            got["cm3"][ef].append(recall(perm[np.load(nout)], truth))
            line.append(f"ef={ef} cm3 {got['cm3'][ef][-1]:.4f} faiss {got['faiss'][ef][-1]:.4f}")
        print(f"{name} order {o}: cm3 build {bsecs:.1f} s; " + "; ".join(line), flush=True)
        os.remove(ppath)
        shutil.rmtree(idx)
    return got


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cm3", required=True)
    ap.add_argument("--sets", default="sift,100k")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--m", type=int, default=32)
    ap.add_argument("--ef-construction", type=int, default=200)
    ap.add_argument("--ef-search", default="64,128,256")
    ap.add_argument("--no-hnsw-for", default="1m", help="sets whose HNSW build is skipped (too slow here)")
    ap.add_argument("--orders", type=int, default=1,
                    help="HNSW builds per library, each on another seeded order of the vectors (recall averaged)")
    ap.add_argument("--work", default=None)
    a = ap.parse_args()
    work = a.work or tempfile.mkdtemp(prefix="cm3-index-bench.")
    os.makedirs(work, exist_ok=True)
    env_threads = dict(os.environ, OMP_NUM_THREADS=str(a.threads), RAYON_NUM_THREADS=str(a.threads))
    os.environ.update(env_threads)
    rows, recalls = [], {}
    for name in a.sets.split(","):
        if name == "sift":
            base = read_fvecs(os.path.join(HERE, "../index/tests/fixtures/sift/split_base4800.fvecs"))
            queries = read_fvecs(os.path.join(HERE, "../index/tests/fixtures/sift/split_query200.fvecs"))
        else:
            n = {"100k": 100_000, "1m": 1_000_000}[name]
            base = clustered(n, 512, 1000, 0)
            queries = clustered(1000, 512, 1000, 1)
        bpath, qpath = os.path.join(work, f"{name}-base.npy"), os.path.join(work, f"{name}-q.npy")
        np.save(bpath, base.astype(np.float32))
        np.save(qpath, queries.astype(np.float32))
        n, dim, nq = base.shape[0], base.shape[1], queries.shape[0]
        print(f"== {name}: {n} x {dim}, {nq} queries, k=10, {a.threads} threads", flush=True)
        truth_path = os.path.join(work, f"{name}-truth.npy")

        def faiss(kind, efs="0", bpath=bpath):
            out = os.path.join(work, f"{name}-faiss-{kind}-{{ef}}.npy")
            secs, mib, o, _ = timed_rss([sys.executable, os.path.join(HERE, "index_faiss.py"), kind, bpath, qpath, out,
                                         str(a.m), str(a.ef_construction), efs, str(a.threads)])
            r = json.loads(o.strip().splitlines()[-1])
            return r, mib, {e: np.load(out.replace("{ef}", e)) for e in efs.split(",")}

        r, mib, found = faiss("flat")
        truth = found["0"]
        np.save(truth_path, truth)
        rows.append((name, "faiss IndexFlatIP", r["build_s"], r["qps"]["0"], 1.0, f"{mib:.0f}"))

        for storage in ["f32", "f16"]:
            idx = os.path.join(work, f"{name}-cm3-flat-{storage}")
            bsecs, bmib, _, _ = timed_rss([a.cm3, "-q", "index", "build", "--vectors", bpath, "--kind", "flat", "--storage", storage, "--out", idx, "--rebuild"])
            nout = os.path.join(work, f"{name}-cm3-flat-{storage}-n.npy")
            _, smib, _, err = timed_rss([a.cm3, "index", "search", idx, "--queries", qpath, "-k", "10", "--out", nout])
            qps = float([l for l in err.splitlines() if "queries/s" in l][-1].split("(")[1].split(" queries/s")[0])
            rows.append((name, f"cm3 flat ({storage})", bsecs, qps, recall(np.load(nout), truth), f"{bmib:.0f} / {smib:.0f}"))

        if name in a.no_hnsw_for.split(","):
            continue
        r, mib, found = faiss("hnsw", a.ef_search)
        for ef in a.ef_search.split(","):
            rows.append((name, f"faiss IndexHNSWFlat M={a.m} ef={ef}", r["build_s"], r["qps"][ef], recall(found[ef], truth), f"{mib:.0f}"))
        idx = os.path.join(work, f"{name}-cm3-hnsw")
        bsecs, bmib, _, _ = timed_rss([a.cm3, "-q", "index", "build", "--vectors", bpath, "--kind", "hnsw", "--m", str(a.m),
                                        "--ef-construction", str(a.ef_construction), "--out", idx, "--rebuild"])
        for ef in [int(e) for e in a.ef_search.split(",")]:
            nout = os.path.join(work, f"{name}-cm3-hnsw-{ef}-n.npy")
            _, smib, _, err = timed_rss([a.cm3, "index", "search", idx, "--queries", qpath, "-k", "10", "--ef-search", str(ef), "--out", nout])
            qps = float([l for l in err.splitlines() if "queries/s" in l][-1].split("(")[1].split(" queries/s")[0])
            rows.append((name, f"cm3 hnsw M={a.m} ef={ef}", bsecs, qps, recall(np.load(nout), truth), f"{bmib:.0f} / {smib:.0f}"))
        if a.orders > 1:
            recalls[name] = hnsw_orders(a, name, work, base, qpath, truth, faiss, rows)
    print()
    print(f"{'set':6} {'index':34} {'build s':>9} {'queries/s':>10} {'recall@10':>9} {'max RSS MiB (build / search)':>29}")
    for r in rows:
        print(f"{r[0]:6} {r[1]:34} {r[2]:9.2f} {r[3]:10.1f} {r[4]:9.4f} {r[5]:>29}")
    print()
    for name in dict.fromkeys(r[0] for r in rows):
        f = {r[1]: r for r in rows if r[0] == name}
        ff = f["faiss IndexFlatIP"][3]
        for st in ["f32", "f16"]:
            print(f"{name}: cm3 flat ({st}) / faiss IndexFlatIP queries/s = {f[f'cm3 flat ({st})'][3] / ff:.2f} (target >= 0.8)")
        for ef in [int(e) for e in a.ef_search.split(",")]:
            c, g = f.get(f"cm3 hnsw M={a.m} ef={ef}"), f.get(f"faiss IndexHNSWFlat M={a.m} ef={ef}")
            if c and g:
                print(f"{name}: ef={ef}: cm3 hnsw {c[3]:.0f} q/s at recall {c[4]:.4f} vs faiss {g[3]:.0f} q/s at recall {g[4]:.4f}: ratio {c[3] / g[3]:.2f} (target >= 1.0 where recall >= 0.95)")
                if name in recalls:
                    cm, fm = (float(np.mean(recalls[name][lib][ef])) for lib in ("cm3", "faiss"))
                    diffs = np.array(recalls[name]["cm3"][ef]) - np.array(recalls[name]["faiss"][ef])
                    print(f"{name}: ef={ef}: recall@10 over {a.orders} orders: cm3 {cm:.4f}, faiss {fm:.4f}; "
                          f"per order cm3 - faiss {' '.join(f'{d:+.4f}' for d in diffs)}; "
                          f"mean {cm - fm:+.4f} (target within +-0.005, or above)")
                else:
                    print(f"{name}: ef={ef}: recall@10 cm3 - faiss = {c[4] - g[4]:+.4f} (target within +-0.005, or above; one build each: --orders 5 averages)")
        c = next((r for r in rows if r[0] == name and r[1].startswith("cm3 hnsw")), None)
        g = next((r for r in rows if r[0] == name and r[1].startswith("faiss IndexHNSWFlat")), None)
        if c and g:
            build_mib = float(c[5].split(" / ")[0])
            print(f"{name}: HNSW build time cm3 / faiss = {c[2]:.1f} / {g[2]:.1f} s = {c[2] / g[2]:.2f} (target <= 1.5); "
                  f"peak memory {build_mib:.0f} / {float(g[5]):.0f} MiB = {build_mib / float(g[5]):.2f} (target <= 1.2)")


if __name__ == "__main__":
    main()
