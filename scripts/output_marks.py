"""The output marks of an SFT directory (`cm3 sft build`'s packed/train.outputs.bin, what
`loss = "output_only"` scores): the share of tokens marked, by kind, and the marked text runs
decoded. Usage: python3 scripts/output_marks.py <sft dir>"""
import json, sys, collections
from pathlib import Path
ds = Path(sys.argv[1])
meta = json.load(open(ds / "packed/meta.json"))
vocab = meta["vocab"]
text_size = vocab["text"]["size"]
sp = vocab["text"]["specials"]
eos, pad = sp["<eos>"], sp["<pad>"]
toks = memoryview(open(ds / "packed/train.bin", "rb").read()).cast("i")
marks = open(ds / "packed/train.outputs.bin", "rb").read()
assert len(toks) == len(marks), (len(toks), len(marks))
n = len(toks)
real = sum(1 for t in toks if t != pad)
marked = sum(marks)
kinds = collections.Counter()
for t, m in zip(toks, marks):
    if m:
        kinds["eos" if t == eos else "text" if t < text_size else "image"] += 1
# decode marked text with the tokenizer
sys.path.insert(0, str(Path(__file__).resolve().parent))
from read_packed import byte_decoder  # noqa
tp = Path(vocab["text"]["tokenizer"]["path"])
tj = json.load(open(tp if tp.is_absolute() else ds / tp))
id_to_token = {i: t for t, i in tj["model"]["vocab"].items()}
bd = byte_decoder()
class Tok:
    def decode(self, ids):
        return bytes(bd[c] for i in ids for c in id_to_token.get(i, "") if c in bd).decode("utf-8", "replace")
tok = Tok()
print(f"tokens {n}, not padding {real}, marked {marked} ({marked / real:.1%} of real tokens)")
print("marked by kind", dict(kinds))
ends = sum(1 for t in toks if t == eos)
print(f"<eos> tokens {ends}, of which marked {kinds['eos']}")
# marked runs of text
runs, cur = collections.Counter(), []
for t, m in zip(toks, marks):
    if m and t < text_size and t != eos:
        cur.append(t)
    elif cur:
        runs[tuple(cur)] += 1
        cur = []
print("distinct marked text runs", len(runs), "in", sum(runs.values()), "runs; most common:",
      [(tok.decode(list(r)), c) for r, c in runs.most_common(8)])
words = collections.Counter(tok.decode(list(r)).strip() for r in runs.elements())
print("template words among marked runs:", {w: words[w] for w in words if any(x in w for x in ("Question", "Answer", "answer"))})
