"""HNSW queries/s of cm3 against FAISS, interleaved: on a shared machine the load moves between
runs, so one search of each, alternately, ROUNDS times, and the median of the per-round ratios.

    python bench/hnsw_interleaved.py --cm3 BIN --index CM3_INDEX_DIR --base base.npy --queries q.npy
        [--ef 128,512] [--rounds 5] [--m 32] [--ef-construction 200] [--threads 2]

CM3_INDEX_DIR is a `cm3 index build --vectors base.npy --kind hnsw` of the same vectors with the
same M and efConstruction (its build is not timed here; index_vs_faiss.py times builds). FAISS's
IndexHNSWFlat is built once in this process, then every round searches FAISS in-process and cm3
in a child process (its own reported search time, which excludes loading).
"""
import argparse
import os
import re
import statistics
import subprocess
import tempfile
import time

import faiss
import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cm3", required=True)
    ap.add_argument("--index", required=True)
    ap.add_argument("--base", required=True)
    ap.add_argument("--queries", required=True)
    ap.add_argument("--ef", default="128,512")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--m", type=int, default=32)
    ap.add_argument("--ef-construction", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    os.environ.update(OMP_NUM_THREADS=str(a.threads), RAYON_NUM_THREADS=str(a.threads))
    faiss.omp_set_num_threads(a.threads)
    base, queries = np.load(a.base), np.load(a.queries)
    index = faiss.IndexHNSWFlat(base.shape[1], a.m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = a.ef_construction
    index.add(base)
    out = os.path.join(tempfile.mkdtemp(prefix="cm3-hnsw-ab."), "n.npy")
    for ef in [int(e) for e in a.ef.split(",")]:
        index.hnsw.efSearch = ef
        ratios, ours, theirs = [], [], []
        for _ in range(a.rounds):
            t = time.perf_counter()
            index.search(queries, 10)
            f = len(queries) / (time.perf_counter() - t)
            r = subprocess.run([a.cm3, "index", "search", a.index, "--queries", a.queries, "-k", "10",
                                "--ef-search", str(ef), "--out", out], capture_output=True, text=True, check=True)
            c = float(re.findall(r"\(([0-9.]+) queries/s", r.stderr)[-1])
            ours.append(c)
            theirs.append(f)
            ratios.append(c / f)
        print(f"efSearch {ef}: cm3 {statistics.median(ours):.1f} q/s, FAISS {statistics.median(theirs):.1f} q/s; "
              f"per-round ratios {' '.join(f'{x:.2f}' for x in ratios)}; median ratio {statistics.median(ratios):.2f}",
              flush=True)


if __name__ == "__main__":
    main()
