#!/usr/bin/env python3
"""The numbers and table of bench/sft.sh ("Does SFT teach?"), from what it left in SFT_OUT.

  sft_report.py SFT_OUT     print the markdown table, write SFT_OUT/table.md and results.json

Reads the held-out VQA folder (SFT_OUT/vqa-heldout: questions.json, annotations.json) and what
`cm3 eval vqa --run ... --out SFT_OUT/eval/{before,after}` wrote there: answers.jsonl (one
{"question_id", "answer"} a line, the model's span) and report.json (vqaEval's accuracies).
Per question, from the answers:
  exact    the answer, lower-cased, punctuation turned into spaces and whitespace collapsed, is
           the true word ("Red." counts, "the red circle" does not): the benchmark's accuracy
  named    the answer names the true colour (shape) and no other colour (shape), as judge.py
           reads text ("a drawing of the red circle" counts for the colour question): whether
           the model knows the attribute even when it does not answer in the asked form
  official vqaEval's accuracy as `cm3 eval vqa` reports it; all ten human answers agree, so it
           does not normalise (vqaEval's rule) and only the exact string scores
Standard library only.
"""
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from judge import judge_text, right  # noqa: E402
from shapes import COLOURS, SHAPES  # noqa: E402
from report import load_json, run_log  # noqa: E402

STAGES = [("before", "before SFT (pretrained run)"), ("after", "after SFT")]
KINDS = ["colour", "shape"]
CHANCE = {"colour": 1 / len(COLOURS), "shape": 1 / len(SHAPES)}
TARGET = 0.8
FIRST = 6


def norm(text):
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())


def answers(eval_dir):
    """question id (str) -> answer, from the evaluation's progress log; None if absent."""
    try:
        out = {}
        with open(os.path.join(eval_dir, "answers.jsonl")) as f:
            for line in f:
                if line.strip():
                    r = json.loads(line)
                    out[str(r["question_id"])] = r["answer"]
        return out
    except (OSError, ValueError):
        return None


def share(hits):
    n = len(hits)
    return {"right": sum(hits), "total": n, "accuracy": sum(hits) / n if n else None}


def score(questions, truth, given):
    """Exact and named accuracies per kind and overall, and the per-question rows."""
    rows, acc = [], {m: {k: [] for k in KINDS + ["all"]} for m in ("exact", "named")}
    for q in questions:
        qid = str(q["question_id"])
        kind, want = truth[qid]
        a = given.get(qid)
        if a is None:
            continue
        exact = norm(a) == want
        t = judge_text(a)
        named = right(t["colours"] if kind == "colour" else t["shapes"], want)
        for m, hit in (("exact", exact), ("named", named)):
            acc[m][kind].append(hit)
            acc[m]["all"].append(hit)
        rows.append({"question_id": q["question_id"], "question": q["question"], "kind": kind,
                     "truth": want, "answer": a, "exact": exact, "named": named})
    return {m: {k: share(v) for k, v in d.items()} for m, d in acc.items()}, rows


def pct(s):
    if not s or not s.get("total"):
        return "n/a"
    return f"{100 * s['accuracy']:.0f}% ({s['right']}/{s['total']})"


def report(out):
    held = os.path.join(out, "vqa-heldout")
    questions = load_json(os.path.join(held, "questions.json"), {}).get("questions", [])
    anns = load_json(os.path.join(held, "annotations.json"), {}).get("annotations", [])
    truth = {str(a["question_id"]): (a["question_type"], a["multiple_choice_answer"]) for a in anns}
    questions = sorted(questions, key=lambda q: q["question_id"])
    res = {"settings": load_json(os.path.join(out, "settings.json"), {}), "stages": {},
           "chance": CHANCE, "target": TARGET, "missing": []}
    for stage, _ in STAGES:
        d = os.path.join(out, "eval", stage)
        given = answers(d)
        if given is None:
            res["missing"].append(stage)
            res["stages"][stage] = None
            continue
        accs, rows = score(questions, truth, given)
        rep = load_json(os.path.join(d, "report.json"), {})
        acc = (rep.get("metrics") or {}).get("accuracy") or {}
        res["stages"][stage] = {
            **accs,
            "official": {"overall": acc.get("overall"), **(acc.get("perQuestionType") or {})},
            "checkpoint": rep.get("checkpoint"),
            "template": rep.get("template"),
            "leakage": rep.get("leakage"),
            "unanswered": len(questions) - len(rows),
            "questions": rows,
        }
    for name in ("sft-build", "train"):
        res[name] = load_json(os.path.join(out, f"{name}.json"))
    res["timing"], res["failures"] = run_log(out)

    S = res["stages"]
    lines = ["| measure | " + " | ".join(label for _, label in STAGES) + " |", "|---|---|---|"]

    def row(label, f):
        lines.append(f"| {label} | " + " | ".join("not run" if S[s] is None else f(S[s]) for s, _ in STAGES) + " |")

    for k, label in (("colour", "colour questions"), ("shape", "shape questions"), ("all", "all")):
        row(f"VQA accuracy (cm3 eval vqa), {label}", lambda r, k=k: pct(r["exact"][k]))
    for k, label in (("colour", "colour questions"), ("shape", "shape questions"), ("all", "all")):
        row(f"answer names the true attribute, {label}", lambda r, k=k: pct(r["named"][k]))
    fmt = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
    row("official vqaEval accuracy (cm3 eval vqa): colour / shape / overall",
        lambda r: " / ".join(fmt(r["official"].get(k)) for k in ("colour", "shape", "overall")))
    table = "\n".join(lines)

    def acc_of(stage, k):
        r = S.get(stage)
        return None if r is None else r["exact"][k]["accuracy"]

    met = lambda ok: "n/a" if ok is None else "met" if ok else "missed"  # noqa: E731
    targets = []
    for k in ("colour", "all"):
        b, a = acc_of("before", k), acc_of("after", k)
        targets.append(f"{k} questions: after SFT >= {100 * TARGET:.0f}% {met(None if a is None else a >= TARGET)}; "
                       f"after > before {met(None if a is None or b is None else a > b)}")
    res["targets"] = targets
    notes = [f"Chance: colour 1/{len(COLOURS)} = {100 * CHANCE['colour']:.0f}%, "
             f"shape 1/{len(SHAPES)} = {100 * CHANCE['shape']:.0f}%.",
             "Accuracy: the answer, lower-cased and without punctuation, is the true word. "
             "\"Names\": it names the true attribute and no other (judge.py). Official: vqaEval's "
             "number as `cm3 eval vqa` reports it (exact string: all ten answers agree, so no normalisation).",
             "Target: " + "; ".join(targets) + "."]
    first = []
    for s, label in STAGES:
        if S[s] is not None:
            first.append(f"{label}: " + "; ".join(
                f"{r['question_id']} {r['question']!r} ({r['truth']}) -> {r['answer']!r}"
                for r in S[s]["questions"][:FIRST]))
    notes += [f"First {FIRST} answers, {x}" for x in first]
    if res["timing"]:
        notes.append("Seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in res["timing"].items()) + ".")
    if res["missing"]:
        notes.append("Not evaluated: " + ", ".join(res["missing"]) + " (see failures.tsv and logs/).")
    if res["failures"]:
        notes.append(f"Failed commands ({len(res['failures'])}): see failures.tsv")
    md = table + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    print(md)
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(md)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(res, f, indent=1)
        f.write("\n")
    print(f"wrote {out}/table.md, results.json")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    report(sys.argv[1])


if __name__ == "__main__":
    main()
