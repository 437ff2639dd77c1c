"""
Evaluation of a stage on the held-out sets, and the pipeline's report.

    python evaluate.py --out_dir out     # rebuild out/report.md from the stages' eval.json files

Every stage ends with `full_eval`: greedy responses to the held-out reasoning problems (never
trained on by any stage) and to the held-out general tasks, scored with the rule rewards, give
one eval.json of the same schema for every stage:
  accuracy, format_rate, lang_consistency (+ _zh, _en), accuracy_zh / _en, mean_response_tokens,
  n (distinct problems), accuracy_<kind><difficulty>; accuracy_general, format_rate_general,
  needless_chain_rate (a chain of thought where none is needed), n_general; reflection_rate (the
  share of responses whose <think> checks a step, reflect.py), accuracy_with_reflection /
  _without_reflection, n_with_reflection and checks_<outcome> for each of reflect.OUTCOMES.
With probes=True (the base and zero) it adds what explains their behaviour, by forcing the
opening of the <think> block: accuracy_forced_bare / _forced_chain (the reasoning gap: does a
chain pay?), and on Chinese prompts zh_accuracy_chain_zh / _chain_en (does an English chain pay
more than a Chinese one? that gap is what pulls R1-Zero into English, and the price the
language reward pays, R1 §2.3.2); and, when some responses check a step, accuracy_checks_banned
(+ _with_reflection_checks_banned, format_rate_ and reflection_rate_checks_banned): the same
problems with every check forbidden at decode (do the checks pay?); in a world with checks,
accuracy_with/_without_reflection_sampled (+ reflection_rate_, n_mixed_ and accuracy_gain_sampled_se,
and per kind): 32 samples per problem, those with a check against those without on the same
problems (`checks_sampled`).

report.md is built from the eval.json files alone, so it can be rebuilt without training.
"""
import argparse
import contextlib
import json
import os
import random
import statistics
from collections import Counter

import torch

import data
import dist
import reflect
import rewards
import tokenizer

MATH_TERMS = ("accuracy", "format")


def mean(xs):
    xs = list(xs)
    return sum(xs) / max(1, len(xs))


@torch.no_grad()
def respond(model, enc, problems, max_new_tokens, prefix="", batch=100, ban=(), temperature=0, generator=None):
    """Greedy responses (optionally forced to begin with `prefix`, one per problem or one for
    all; never writing the token ids in `ban`; sampled at `temperature` > 0 with `generator`).
    Returns the texts (prefix included) and their token counts. Under data parallel each rank
    answers a contiguous share and every rank gets all the answers, in order."""
    prefixes = prefix if isinstance(prefix, list) else [prefix] * len(problems)
    mine = dist.my_share(len(problems), even=False)
    problems, prefixes = problems[mine], prefixes[mine]
    was_training = model.training
    model.eval()
    texts, ntoks = [], []
    for i in range(0, len(problems), batch):
        chunk, pre = problems[i:i + batch], prefixes[i:i + batch]
        outs = model.generate([enc.encode_ordinary(p.prompt + x) for p, x in zip(chunk, pre)],
                              max_new_tokens, enc.eot_token, temperature=temperature, ban=ban, generator=generator)
        for o, x in zip(outs, pre):
            ntoks.append(len(o))
            texts.append(x + enc.decode([t for t in o if t != enc.eot_token]))
    model.train(was_training)
    return dist.gather(texts), dist.gather(ntoks)


def score(texts, problems, terms=MATH_TERMS, weights=None):
    """The rule rewards of responses to `problems` (reasoning or general, any mix)."""
    return rewards.score_batch(texts, [p.answer for p in problems], [p.lang for p in problems], terms=terms,
                               weights=weights, kinds=[p.kind for p in problems])


def kind_label(p):
    """A problem's kind and difficulty, as eval.json's per-kind keys spell them: "arith2"."""
    return f"{p.kind}{p.difficulty}"


def reasoning_summary(problems, texts, ntoks):
    s = score(texts, problems)
    res = {"accuracy": mean(s["accuracy"]), "format_rate": mean(s["format"]),
           "lang_consistency": mean(s["lang"]), "mean_response_tokens": mean(ntoks), "n": len(problems)}
    for lang in ("zh", "en"):
        rows = [i for i, p in enumerate(problems) if p.lang == lang]
        res[f"lang_consistency_{lang}"] = mean(s["lang"][i] for i in rows)
        res[f"accuracy_{lang}"] = mean(s["accuracy"][i] for i in rows)
    for kind in sorted(set(map(kind_label, problems))):
        res[f"accuracy_{kind}"] = mean(a for a, p in zip(s["accuracy"], problems) if kind_label(p) == kind)
    res.update(reflection_summary(texts, s["accuracy"]))
    return res


def reflection_summary(texts, accuracy):
    """How often the responses check a step (the world's check marker, reflect.py), how often
    those with a check are right against those without, and what the checks did, counted over
    every check of every response (reflect.check_outcomes)."""
    has = [reflect.has_check(t) for t in texts]
    outcomes = sum((reflect.check_outcomes(t) for t in texts), Counter())
    return {"reflection_rate": mean(has), "n_with_reflection": sum(has),
            "accuracy_with_reflection": mean(a for a, h in zip(accuracy, has) if h) if any(has) else None,
            "accuracy_without_reflection": mean(a for a, h in zip(accuracy, has) if not h) if not all(has) else None,
            **{f"checks_{k}": outcomes[k] for k in reflect.OUTCOMES}}


def full_eval(model, enc, cfgs, probes=False, autocast=None, heldout=None):
    """The eval.json fields of a stage (see the module docstring) plus example responses: one
    per language and one per general task kind. heldout: (problems, file) to evaluate on the
    held-out share of a --data file instead of the toy world's held-out set."""
    dc, budget = cfgs["data"], cfgs["train"].eval_new_tokens
    problems, general = heldout[0] if heldout else data.heldout_problems(dc), data.heldout_general(dc)
    with autocast or contextlib.nullcontext():
        texts, ntoks = respond(model, enc, problems, budget)
        res = reasoning_summary(problems, texts, ntoks)
        g_texts, _ = respond(model, enc, general, budget)
        g = score(g_texts, general)
        res.update(accuracy_general=mean(g["accuracy"]), format_rate_general=mean(g["format"]),
                   needless_chain_rate=mean(map(rewards.needless_chain, g_texts)), n_general=len(general))
        for kind in data.GENERAL_KINDS:
            res[f"accuracy_general_{kind}"] = mean(a for a, p in zip(g["accuracy"], general) if p.kind == kind)
        if probes:
            res.update(forced_openings(model, enc, problems, budget))
        if probes and res["n_with_reflection"]:
            res.update(checks_banned(model, enc, problems, budget, [reflect.has_check(t) for t in texts]))
        if probes and dc.check_mode != "none":
            res.update(checks_sampled(model, enc, problems, budget))
    res["heldout_set"] = heldout_signature(cfgs) + (f" file={heldout[1]}" if heldout else "")
    picks = [next((p, t) for p, t in zip(problems, texts) if p.lang == lang) for lang in ("en", "zh")
             if any(p.lang == lang for p in problems)]
    picks += [next((p, t) for p, t in zip(general, g_texts) if p.kind == kind) for kind in data.GENERAL_KINDS]
    res["examples"] = [{"prompt": p.question, "lang": p.lang, "kind": p.kind, "answer": p.answer, "response": t}
                       for p, t in picks]
    return res


def forced_openings(model, enc, problems, budget):
    """Accuracy when the <think> block is forced to open bare or with a chain (in the prompt's
    language), and on Chinese prompts with a chain opened in Chinese against English."""
    def accuracies(probs, opener):  # per problem, its <think> forced to begin with opener(problem)
        texts, _ = respond(model, enc, probs, budget, prefix=[" <think> " + opener(p) for p in probs])
        return score(texts, probs)["accuracy"]
    zh = [i for i, p in enumerate(problems) if p.lang == "zh"]
    chain = accuracies(problems, lambda p: data.CHAIN_OPENER[p.lang])
    return {"accuracy_forced_bare": mean(accuracies(problems, lambda p: data.BARE_OPENER[p.lang])),
            "accuracy_forced_chain": mean(chain), "zh_accuracy_chain_zh": mean(chain[i] for i in zh),
            "zh_accuracy_chain_en": mean(accuracies([problems[i] for i in zh], lambda p: data.CHAIN_OPENER["en"])),
            "n_zh": len(zh)}


def checks_banned(model, enc, problems, budget, checked):
    """What the checks buy: the same problems answered with every check forbidden (the marker's
    tokens banned at decode, reflect.marker_tokens). Responses with and without a check answer
    different problems (RL settles on checking some kinds of problem and not others), so
    accuracy_with/_without_reflection compare kinds as much as checks; this compares one model
    on the same prompts. checked: per problem, whether its free response checks a step.
    reflection_rate_checks_banned counts checks written anyway (a marker spelt in other tokens);
    format_rate_checks_banned shows the worst of what a ban can do to a model that knows no path
    without its checks (a derailed chain may still be well formed: then only reading shows it)."""
    texts, _ = respond(model, enc, problems, budget, ban=reflect.marker_tokens(enc))
    s = score(texts, problems)
    return {"accuracy_checks_banned": mean(s["accuracy"]),
            "accuracy_with_reflection_checks_banned": mean(a for a, c in zip(s["accuracy"], checked) if c),
            "format_rate_checks_banned": mean(s["format"]),
            "reflection_rate_checks_banned": mean(map(reflect.has_check, texts))}


def checks_sampled(model, enc, problems, budget, k=32, temperature=1.0, seed=0):
    """The model's own choice, on the same prompts: each problem answered k times at
    temperature 1 (as RL samples it). On the problems where some of the samples that reason (a
    chain of thought: rewards.needless_chain) check a step and some do not,
    accuracy_with/_without_reflection_sampled are the share right among each problem's chains
    with a check and among its chains without, averaged over those problems (each weighs the
    same). So kinds are not compared against kinds (the greedy with/without), chains are not
    compared against bare answers (which never check), and no ban throws the model off its path
    (checks_banned): which chains check is the model's choice. reflection_rate_sampled is the
    share of all samples that check; n_mixed_sampled the number of problems compared;
    accuracy_gain_sampled_se the standard error of with - without over them (so a gap of less
    than two of it is a tie); and the same per kind of problem (_<kind><difficulty>), since a
    model checks some kinds out of habit and others only by a rare sample's chance.
    k=32: a model that checks a third of its samples mixes on about 30 of 200 problems at k=8
    (the README), too few to tell a gap of a few points from none."""
    many = [p for p in problems for _ in range(k)]
    gen = torch.Generator().manual_seed(seed + dist.rank())
    texts, _ = respond(model, enc, many, budget, temperature=temperature, generator=gen)
    right, has = score(texts, many)["accuracy"], [reflect.has_check(t) for t in texts]
    chain = [rewards.needless_chain(t) > 0 for t in texts]
    mixed = []  # (kind, share right with a check, without) of each problem compared
    for i in range(0, len(many), k):  # the k samples of one problem
        checked = [right[j] for j in range(i, i + k) if chain[j] and has[j]]
        unchecked = [right[j] for j in range(i, i + k) if chain[j] and not has[j]]
        if checked and unchecked:
            mixed.append((kind_label(many[i]), mean(checked), mean(unchecked)))
    gaps = [w - wo for _, w, wo in mixed]
    res = {"reflection_rate_sampled": mean(has), "n_mixed_sampled": len(mixed),
           "accuracy_with_reflection_sampled": mean(w for _, w, _ in mixed) if mixed else None,
           "accuracy_without_reflection_sampled": mean(wo for _, _, wo in mixed) if mixed else None,
           "accuracy_gain_sampled_se": (statistics.stdev(gaps) / len(gaps) ** 0.5) if len(gaps) > 1 else None}
    for kind in sorted(set(map(kind_label, problems))):
        some = [(w, wo) for kd, w, wo in mixed if kd == kind]
        res[f"n_mixed_sampled_{kind}"] = len(some)
        res[f"accuracy_with_reflection_sampled_{kind}"] = mean(w for w, _ in some) if some else None
        res[f"accuracy_without_reflection_sampled_{kind}"] = mean(wo for _, wo in some) if some else None
    return res


def heldout_loss_fn(model, enc, data_cfg, batch_size, block, device, autocast):
    """Mean loss over every token of a fixed set of held-out documents, in non-overlapping
    windows (the same tokens for every run, so two runs' losses differ only by their models)."""
    rng = random.Random(data_cfg.seed + 7)
    docs = [data.make_document(rng, data_cfg, kind, difficulty, split="heldout")  # 64 per kind
            for kind, difficulty in data.parse_mix(data_cfg.rl_mix) for _ in range(64)]
    ids = torch.tensor(tokenizer.encode_docs(enc, docs), dtype=torch.long)
    n = (len(ids) - 1) // block
    xs, ys = ids[:n * block].view(n, block), ids[1:n * block + 1].view(n, block)  # (n, T)

    @torch.no_grad()
    def heldout_loss():
        model.eval()
        total = 0.0
        for i in range(0, n, batch_size):
            with autocast:
                _, loss = model(xs[i:i + batch_size].to(device), ys[i:i + batch_size].to(device))
            total += loss.item() * len(xs[i:i + batch_size])
        model.train()
        return total / n
    return heldout_loss


def heldout_signature(cfgs):
    """What defines the held-out sets and their evaluation: evals are comparable iff equal."""
    d = cfgs["data"]
    return (f"seed={d.seed} n={d.n_heldout} n_general={d.n_heldout_general} mix={d.rl_mix} "
            f"p_zh={d.rl_p_zh} new_tokens={cfgs['train'].eval_new_tokens}")


TABLE_KEYS = ("accuracy", "format_rate", "lang_consistency_zh", "lang_consistency_en", "mean_response_tokens",
              "accuracy_general", "needless_chain_rate", "accuracy_forced_bare", "accuracy_forced_chain",
              "reflection_rate", "accuracy_checks_banned")


def print_table(res, name, before, before_name):
    """A stage's held-out figures beside those of the stage it started from."""
    cols = [(before_name, before)] * bool(before) + [(name, res)]
    title, w = f"held-out ({res['n']} + {res['n_general']} general)", max(12, *(len(c) + 2 for c, _ in cols))
    print(f"\n{title:<32}" + "".join(f"{c:>{w}}" for c, _ in cols))
    for k in TABLE_KEYS:
        if k in res:
            fmt = f"{{:>{w}.1f}}" if k == "mean_response_tokens" else f"{{:>{w}.1%}}"
            cells = (fmt.format(ev[k]) if ev.get(k) is not None else f"{'–':>{w}}" for _, ev in cols)
            print(f"{k:<32}" + "".join(cells))


# ----------------------------------------------------------------------------------------------
# Curves and the report

CURVE_KEYS = ("reward", "accuracy", "lang", "response_tokens", "reflection_rate")


def sparkline(xs, width=60):
    bars = "▁▂▃▄▅▆▇█"
    xs = [xs[int(i * len(xs) / width)] for i in range(width)] if len(xs) > width else xs
    lo, hi = min(xs), max(xs)
    return "".join(bars[int((x - lo) / (hi - lo + 1e-12) * (len(bars) - 1))] for x in xs) + f"  [{lo:.2f} .. {hi:.2f}]"


def read_metrics(stage_dir):
    path = os.path.join(stage_dir, "metrics.jsonl")
    return [json.loads(line) for line in open(path)] if os.path.exists(path) else []


def plot_curves(stage_dir, keys=CURVE_KEYS):
    """curves.png of a GRPO stage's metrics.jsonl; without matplotlib (an optional extra) the
    curves are returned as text sparklines instead. Returns the lines for the report."""
    rows = [r for r in read_metrics(stage_dir) if "reward" in r]
    if not rows:
        return []
    keys = [k for k in keys if k in rows[0]]  # (runs from before a curve existed lack it)
    try:
        import matplotlib  # optional extra: imported here so the project runs without it
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [f"    {k:>16} {sparkline([r[k] for r in rows])}" for k in keys]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3))
    for ax, k in zip(axes, keys):
        ax.plot([r["step"] for r in rows], [r[k] for r in rows])
        ax.set_title(k)
        ax.set_xlabel("GRPO step")
    fig.tight_layout()
    fig.savefig(os.path.join(stage_dir, "curves.png"), dpi=100)
    plt.close(fig)
    return [f"![{os.path.basename(stage_dir)} curves]({os.path.basename(stage_dir)}/curves.png)"]


REPORT_ROWS = (("pretrain", "base"), ("zero", "zero (R1-Zero)"), ("sft1", "sft1 (cold start)"),
               ("rl1", "rl1 (reasoning RL)"), ("rl1_nolang", "rl1 without the language reward"),
               ("sft2", "sft2 (rejection sampling + general)"), ("rl2", "rl2 (all scenarios): the teacher"),
               ("student_base", "student base (small dense)"), ("student_zero", "student + RL (zero, no teacher)"),
               ("distill", "student distilled from rl2"))
COLUMNS = (("accuracy", "reasoning acc", "pct"), ("format_rate", "format", "pct"),
           ("lang_consistency_zh", "lang zh", "frac"), ("lang_consistency_en", "lang en", "frac"),
           ("mean_response_tokens", "tokens", "num"), ("reflection_rate", "reflection", "pct"),
           ("accuracy_general", "general acc", "pct"),
           ("needless_chain_rate", "needless chain", "pct"), ("flops", "compute", "tflop"), ("wall_s", "wall", "min"))


def cell(value, fmt):
    if value is None:
        return "–"
    return {"pct": f"{value:.1%}", "frac": f"{value:.3f}", "num": f"{value:.1f}", "min": f"{value / 60:.1f} min",
            "tflop": f"{value / 1e12:.2f} TFLOP"}[fmt]


def positions(row):
    """A metrics.jsonl row's positions through the model, weighted by their cost in forward
    passes: 3 per position trained (forward and backward), 1 per position sampled or scored."""
    return 3 * row.get("tokens_trained", 0) + row.get("tokens_sampled", 0) + row.get("tokens_scored", 0)


def stage_compute(flops_per_token, rows, teacher_flops=0.0):
    """The FLOPs a stage spent, from its metrics.jsonl rows: 6 N per position trained and 2 N per
    position sampled or scored, N the active parameters (Kaplan et al. 2020; flops_per_token =
    GPT.flops_per_token() = 2 N, without attention's term, a fifth or less at these lengths),
    plus what its teacher spent sampling its data. R1 §4.1 weighs distillation against RL at
    their compute; the held-out evaluation is not counted."""
    counts = {k: sum(r.get(k, 0) for r in rows) for k in ("tokens_trained", "tokens_sampled", "tokens_scored")}
    own = flops_per_token * positions(counts)
    return {**counts, "teacher_flops": teacher_flops, "flops": own + teacher_flops}


def matched_compute(z, rows, budget):
    """The RL run's held-out accuracy at its evaluations (every rl_eval_every steps) that had
    spent no more than `budget` FLOPs: RL and distillation compared at equal compute. z: the RL
    stage's eval.json, whose counts and FLOPs (stage_compute; no teacher) give its cost per position."""
    per_position = z["flops"] / positions(z)
    spent, within = 0.0, []
    for r in rows:
        spent += per_position * positions(r)
        if "heldout_accuracy" in r and spent <= budget:
            within.append(f"step {r['step']} ({spent / 1e12:.2f} TFLOP): {r['heldout_accuracy']:.1%}")
    return ["", "The RL run's held-out accuracy within distill's compute: "
                + ("; ".join(within) if within else "none of its evaluations came that early") + "."]


def distillation_lines(evals, out_dir):
    """R1 §4.1's two findings, read off the student rows: distillation against RL on the same
    small model at their compute, and the student against its teacher."""
    if "distill" not in evals:
        return []
    d, rs = evals["distill"], evals["distill"]["rejection"]
    dropped = ", ".join(f"{k} {v}" for k, v in rs["dropped"].items())
    lines = ["", f"distill's rejection sampling: {rs['drawn']} samples drawn from rl2 over {rs['prompts']} reasoning "
                 f"and general prompts, {rs['kept']} kept; dropped: {dropped}. The teacher's sampling cost "
                 f"{rs['teacher_flops'] / 1e12:.2f} of distill's {d['flops'] / 1e12:.2f} TFLOP (6 N per position "
                 "trained, 2 N per position sampled or scored)."]
    if "student_zero" in evals:
        z = evals["student_zero"]
        lines += ["", f"Distillation against RL on the student (R1 §4.1): {d['accuracy']:.1%} against "
                      f"{z['accuracy']:.1%} held-out ({(d['accuracy'] - z['accuracy']) * 100:+.1f} points), at "
                      f"{d['flops'] / 1e12:.2f} against {z['flops'] / 1e12:.2f} TFLOP "
                      f"(distill / RL = {d['flops'] / z['flops']:.2f})."]
        lines += matched_compute(z, read_metrics(os.path.join(out_dir, "student_zero")), d["flops"])
    if "rl2" in evals:
        t = evals["rl2"]["accuracy"]
        lines += ["", f"The student against its teacher: {d['accuracy']:.1%} against rl2's {t:.1%} "
                      f"({(d['accuracy'] - t) * 100:+.1f} points)."]
    return lines


def sampled_line(label, ev):
    """The report's sentence on a stage's checks_sampled figures."""
    line = (f"{label}, sampled at temperature 1: {ev['reflection_rate_sampled']:.1%} of samples check a step; on "
            f"the {ev['n_mixed_sampled']} problems where some of its chains check and some do not, right "
            f"{cell(ev['accuracy_with_reflection_sampled'], 'pct')} with a check, "
            f"{cell(ev['accuracy_without_reflection_sampled'], 'pct')} without")
    if ev.get("accuracy_gain_sampled_se") is not None:
        line += f" (the gap's standard error: {100 * ev['accuracy_gain_sampled_se']:.1f} points)"
    pre = "n_mixed_sampled_"
    kinds = [(key[len(pre):], n) for key, n in ev.items() if key.startswith(pre) and n]
    if kinds:
        line += "; by kind, with / without (problems): " + ", ".join(
            f"{kd} {cell(ev[f'accuracy_with_reflection_sampled_{kd}'], 'pct')} / "
            f"{cell(ev[f'accuracy_without_reflection_sampled_{kd}'], 'pct')} ({n})" for kd, n in kinds)
    return line + "."


def write_report(out_dir):
    """out_dir/report.md from the stages' eval.json files: one row per finished stage, the RL
    curves, two sample responses per stage. Refuses stages evaluated on different sets."""
    evals = {}
    for stage, _ in REPORT_ROWS:
        path = os.path.join(out_dir, stage, "eval.json")
        if os.path.exists(path):
            evals[stage] = json.load(open(path))
    if not evals:
        raise FileNotFoundError(f"no eval.json under {out_dir}: nothing to report (run: python train.py --stage zero, "
                                f"or --stage all)")
    sets = {ev["heldout_set"] for ev in evals.values()}
    if len(sets) > 1:
        raise ValueError(f"the stages under {out_dir} were evaluated on different held-out sets: {sorted(sets)}")
    n = next(iter(evals.values()))
    lines = ["# nanoR1 report", "",
             f"Held-out: {n['n']} reasoning problems, {n['n_general']} general tasks ({sets.pop()}); "
             "greedy decoding.", "",
             "| stage | " + " | ".join(c[1] for c in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for stage, label in REPORT_ROWS:
        if stage in evals:
            lines.append(f"| {label} | " + " | ".join(cell(evals[stage].get(k), f) for k, _, f in COLUMNS) + " |")
    lines += ["", f"Wall time of these stages: {sum(ev['wall_s'] for ev in evals.values()) / 60:.1f} min."]
    base = evals.get("pretrain", {})
    if "zh_accuracy_chain_en" in base:
        lines += ["", f"The base on {base['n_zh']} Chinese prompts, its chain forced to open in Chinese: "
                      f"{base['zh_accuracy_chain_zh']:.1%}; in English: {base['zh_accuracy_chain_en']:.1%}. "
                      f"Forced bare: {base['accuracy_forced_bare']:.1%}; "
                      f"forced chain: {base['accuracy_forced_chain']:.1%}."]
    for stage, label in REPORT_ROWS:
        ev, said = evals.get(stage, {}), []
        if ev.get("n_with_reflection"):
            said.append(f"{label}: {ev['reflection_rate']:.1%} of held-out responses check a step; right "
                        f"{cell(ev['accuracy_with_reflection'], 'pct')} with a check, "
                        f"{cell(ev['accuracy_without_reflection'], 'pct')} without. The checks: " +
                        ", ".join(f"{ev[f'checks_{k}']} {k}" for k in reflect.OUTCOMES) + ".")
            if "accuracy_checks_banned" in ev:
                said.append(f"With every check forbidden at decode: {cell(ev['accuracy_checks_banned'], 'pct')} "
                            f"right (on the problems it checks: "
                            f"{cell(ev['accuracy_with_reflection_checks_banned'], 'pct')}, against "
                            f"{cell(ev['accuracy_with_reflection'], 'pct')} with the check).")
        if ev.get("n_mixed_sampled"):
            said.append(sampled_line(label, ev))
        if said:
            lines += ["", " ".join(said)]
    if "rejection" in evals.get("sft2", {}):
        rs = evals["sft2"]["rejection"]
        lines += ["", f"sft2's rejection sampling: {rs['drawn']} samples drawn from rl1 over {rs['prompts']} prompts, "
                      f"{rs['kept']} kept; dropped: " + ", ".join(f"{k} {v}" for k, v in rs["dropped"].items()) +
                      f"; plus {rs['general']} general-task examples."]
    lines += distillation_lines(evals, out_dir)
    for stage, label in REPORT_ROWS:
        if stage not in evals:
            continue
        lines += ["", f"## {label}", ""]
        curves = plot_curves(os.path.join(out_dir, stage))
        if curves:
            lines += ["Curves over GRPO steps (sampled completions):", "", *curves, ""]
        for ex in evals[stage]["examples"][:2]:
            lines += [f"- [{ex['lang']}] {ex['prompt']} (gold {ex['answer']})", f"  `{ex['response'].strip()}`"]
    path = os.path.join(out_dir, "report.md")
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(path + ".tmp", path)
    return path


if __name__ == "__main__":
    p = argparse.ArgumentParser(description="rebuild report.md from the stages' eval.json files")
    p.add_argument("--out_dir", default="out")
    out_dir = p.parse_args().out_dir
    try:
        print("wrote", write_report(out_dir))
    except (FileNotFoundError, ValueError) as e:  # nothing evaluated yet, or stages on different held-out sets
        p.exit(2, f"{p.prog}: error: {e}\n")
