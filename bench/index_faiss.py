"""One FAISS run (child process of index_vs_faiss.py): build once, search one batch per efSearch
value (comma-separated), save the neighbours of each to OUT with {ef} replaced, print JSON."""
import json
import sys
import time

import faiss
import numpy as np

kind, bpath, qpath, out, m, efc, ef, threads = sys.argv[1:9]
faiss.omp_set_num_threads(int(threads))
base, queries = np.load(bpath), np.load(qpath)
d = base.shape[1]
t = time.perf_counter()
if kind == "flat":
    index = faiss.IndexFlatIP(d)
else:
    index = faiss.IndexHNSWFlat(d, int(m), faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = int(efc)
index.add(base)
build = time.perf_counter() - t
qps = {}
for e in ef.split(","):
    if kind == "hnsw":
        index.hnsw.efSearch = int(e)
    t = time.perf_counter()
    _, ids = index.search(queries, 10)
    secs = time.perf_counter() - t
    np.save(out.replace("{ef}", e), ids.astype(np.int64))
    qps[e] = len(queries) / secs
print(json.dumps({"build_s": build, "qps": qps}))
