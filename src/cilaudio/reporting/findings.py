"""The findings of both report pages in plain language, computed from the numbers.

:func:`findings` (the per-norm report): where each method ends against the bounds, fine-tuning
and joint training. :func:`comparison_findings` (the norms side by side): which norm forgets
least and transfers best backwards for each method, which method closes most of the
finetune-to-joint gap, and where the representation drifts (CKA). Every number is a mean over
seeds with its 95 % t-interval, and every claim (a method between the bounds, a best norm) is
backed by a paired difference over seeds (:mod:`cilaudio.stats`): where it does not hold, the
sentence says that the two are not distinguishable at this number of seeds.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from cilaudio.metrics import metric_label
from cilaudio.reporting.statistics import (
    BOUNDS,
    LOWER,
    UPPER,
    comparison_table,
    ranked,
    seed_table,
    seed_values,
)
from cilaudio.reporting.texts import norm_name
from cilaudio.stats import Interval, Paired, describe, fmt_interval, interval, paired, seeds_word, verdict
from cilaudio.tables import final_per_seed, gap_shares

SINGLE_SEED = (
    "Every figure here comes from ONE seed, so no spread was measured and no interval can be given: "
    "every difference between methods is not distinguishable (one seed). On the built-in benchmark, a "
    "change of the dropout masks alone moved a method's share of the gap by more than 20 percentage "
    "points, so do not rank methods or norms on these numbers. Add seeds (run.seeds) to get 95 % "
    "intervals over seeds and paired comparisons.")


def _pct(iv: Interval) -> str:
    """A share with its 95 % interval, in percent."""
    return fmt_interval(iv, 1, scale=100, unit=" %")


def _one_clause(*ivs: Interval) -> str:
    """``"; one seed, no interval"`` when the numbers of a sentence come from one seed."""
    return "; one seed, no interval" if max((iv.n for iv in ivs), default=0) == 1 else ""


def _one_note(*ivs: Interval) -> str:
    """``" (one seed, no interval)"`` when the numbers of a sentence come from one seed."""
    return " (one seed, no interval)" if max((iv.n for iv in ivs), default=0) == 1 else ""


def _paired_note(p: Paired, a: str, b: str, *, scale: float = 1.0, unit: str = "", digits: int = 3) -> str:
    return f"{a} vs {b} {describe(p, scale=scale, unit=unit, digits=digits)} (paired by seed)"


# ----------------------------------------------------------------------------- the per-norm report


def _by_seed(frame: pd.DataFrame, method: str, column: str = "value") -> dict[int, float]:
    sel = frame[frame["method"] == method]
    return {int(s): float(v) for s, v in zip(sel["seed"], sel[column])}


def _run_values(table: pd.DataFrame, sel: pd.DataFrame, finals: pd.DataFrame, shares: pd.DataFrame,
                ds: str, norm: str) -> dict[str, Any]:
    """The numbers the findings of one (dataset, norm) need, per method and seed: the final-phase
    value (``final_of``), the phase-0 value (``start_of``), the mean over phases 1..K (``mean_of``)
    and the gap shares (``shares``); ``final``: the last phase."""
    sub = sel[(sel["dataset"] == ds) & (sel["norm"] == norm)]
    fin = finals[(finals["dataset"] == ds) & (finals["norm"] == norm)]
    p0 = sub[sub["phase"] == 0].groupby(["method", "seed"])["value"].mean()
    later = sub[sub["phase"] > 0].groupby(["method", "seed"])["value"].mean()
    methods = list(dict.fromkeys(sub["method"]))
    return {
        "final": int(table[(table["dataset"] == ds) & (table["norm"] == norm)]["phase"].max()),
        "methods": methods,
        "final_of": {m: _by_seed(fin, m) for m in methods},
        "start_of": {m: {int(s): float(v) for (mm, s), v in p0.items() if mm == m} for m in methods},
        "mean_of": {m: {int(s): float(v) for (mm, s), v in later.items() if mm == m} for m in methods},
        "shares": shares[(shares["dataset"] == ds) & (shares["norm"] == norm)],
    }


def _bound_sentences(run: Mapping[str, Any], name: str, prefix: str) -> list[str]:
    """How much of their phase-0 value joint and finetune keep at the final phase."""
    out = []
    for m, what in ((UPPER, "joint training (upper bound)"), (LOWER, "fine-tuning (lower bound)")):
        if m not in run["methods"]:
            continue
        a, b = run["start_of"][m], run["final_of"][m]
        keep = interval([b[s] / a[s] for s in a if s in b and a[s] != 0])
        drop = paired(a, b)
        out.append(
            f"{prefix}After the final phase ({run['final']}), {what} keeps {_pct(keep)} of its phase-0 "
            f"base-class {name} ({fmt_interval(interval(a.values()))} -> {fmt_interval(interval(b.values()))}); "
            f"its drop (phase 0 minus final, per seed) {describe(drop)}{_one_clause(keep)}.")
    return out


def _placement(m: str, prefix: str, detail: str, *, gap: Paired, lo: Paired, hi: Paired) -> str:
    """Where method ``m`` ends against the bounds, said only where the paired differences hold."""
    if gap.n == 0:
        return f"{prefix}{m}: the bounds have no final-phase value on a common seed ({detail})."
    if gap.sign < 0:
        return (f"{prefix}{m}: the bounds are inverted here - joint ends below finetune "
                f"(joint vs finetune {describe(gap)}; {detail}).")
    if lo.sign < 0:
        return f"{prefix}{m} does NOT land between the bounds: it ends BELOW finetune, the lower bound ({detail})."
    if hi.sign > 0:
        return f"{prefix}{m} does NOT land between the bounds: it ends ABOVE joint, the upper bound ({detail})."
    if lo.sign > 0 and hi.sign < 0:
        return f"{prefix}{m} lands between finetune and joint ({detail})."
    unclear = " or ".join(b for b, p in ((LOWER, lo), (UPPER, hi)) if p.sign == 0)
    n = max(lo.n, hi.n)
    at = {0: "(no seed in common)", 1: "(one seed)"}.get(n, f"with {seeds_word(n)}")
    return (f"{prefix}{m} cannot be placed against the bounds: it is not distinguishable from "
            f"{unclear} {at} ({detail}).")


def _method_sentence(run: Mapping[str, Any], m: str, name: str, prefix: str) -> str:
    """A method other than the bounds: its final value against finetune and joint, its share of
    the gap and its mean over phases 1..K against finetune."""
    final, final_of, methods = run["final"], run["final_of"], run["methods"]
    v = interval(final_of[m].values())
    if v.n == 0:
        return f"{prefix}{m}: no final-phase base-class {name} is available."
    if not (LOWER in methods and UPPER in methods):
        absent = " and ".join(b for b in (LOWER, UPPER) if b not in methods)
        return (f"{prefix}{m} ends phase {final} with base-class {name} {fmt_interval(v)}{_one_clause(v)}; "
                f"it cannot be placed between the bounds because {absent} was not run.")
    lo, hi = paired(final_of[m], final_of[LOWER]), paired(final_of[m], final_of[UPPER])
    share = interval(_by_seed(run["shares"], m, "share").values())
    over = paired(run["mean_of"][m], run["mean_of"][LOWER])
    detail = (f"final base-class {name} {fmt_interval(v)} vs finetune "
              f"{fmt_interval(interval(final_of[LOWER].values()))} "
              f"and joint {fmt_interval(interval(final_of[UPPER].values()))}; {m} vs finetune {describe(lo)}; "
              f"{m} vs joint {describe(hi)}; share of the finetune-to-joint gap closed "
              f"{_pct(share)} (per seed); averaged over phases 1-{final}, {m} vs finetune "
              f"{describe(over)}{_one_clause(v)}")
    gap = paired(final_of[UPPER], final_of[LOWER])
    return _placement(m, prefix, detail, gap=gap, lo=lo, hi=hi)


def findings(table: pd.DataFrame, metric: str = "map") -> list[str]:
    """Plain-language statements about the base-class ``metric`` (a registered metric) from ``table``.

    Every number is a mean over seeds with its 95 % t-interval (:mod:`cilaudio.stats`). Joint and
    finetune: how much of their phase-0 base-class mAP they keep at the final phase and whether
    the drop holds over the seeds. Every other method: its final base-class mAP against finetune
    and joint as paired differences over seeds, and its per-seed share of the gap. A method is
    said to lie between, below or above the bounds only where those differences hold; otherwise
    the sentence says that it is not distinguishable at this number of seeds. Beside the final
    phase, each method's value averaged over phases 1..K (per seed) is compared with finetune's:
    the steadier statistic when the final phase alone is noisy.
    """
    name = metric_label(metric)
    sel = table[(table["subset"] == "base") & (table["metric"] == metric)]
    if sel.empty:
        return [f"No base-class {name} results are available."]
    finals = final_per_seed(table, subset="base", metric=metric)
    shares = gap_shares(table, subset="base", metric=metric)
    pairs = list(dict.fromkeys(zip(sel["dataset"], sel["norm"])))
    out: list[str] = []
    for ds, norm in pairs:
        prefix = f"[{ds}, {norm}] " if len(pairs) > 1 else ""
        run = _run_values(table, sel, finals, shares, ds, norm)
        out += _bound_sentences(run, name, prefix)
        out += [_method_sentence(run, m, name, prefix) for m in run["methods"] if m not in BOUNDS]
    if not table.empty and int(table.groupby(["dataset", "norm", "method"])["seed"].nunique().max()) == 1:
        out.append(SINGLE_SEED)
    return out


def left_out_note(table: pd.DataFrame) -> str:
    """What the report says about classes without a positive test excerpt (left out of mAP and
    macro F1), from the ``classes_without_positives`` rows of ``table``."""
    rule = ("Classes without any positive test excerpt in a subset are left out of mAP, macro F1 and "
            "ROC AUC (micro F1 still counts predictions on them as false positives), and classes without "
            "a negative one are left out of ROC AUC too; metrics.tsv gives their number per subset as "
            "classes_without_positives and classes_without_negatives.")
    rows = table[table["metric"] == "classes_without_positives"] if "metric" in table else table.iloc[:0]
    if rows.empty:
        return rule
    worst = rows.groupby("subset")["value"].max()
    left = {k: int(v) for k, v in worst.items() if v > 0}
    if not left:
        return rule + " In this run no class was left out."
    parts = ", ".join(f"{k}: up to {v}" for k, v in sorted(left.items()))
    return rule + f" In this run classes were left out in these subsets ({parts})."


# ----------------------------------------------------------------------------- the norms side by side


def _norm_ranking(seeds: pd.DataFrame, method: str, q: str, norms: Sequence[str], *, higher_is_better: bool,
                  what: str, best_phrase: str, final: int) -> str | None:
    """A sentence on which norm is best for ``method`` on quantity ``q``, backed by the paired
    difference (by seed) of the best and the runner-up; None when no norm has a value."""
    order = ranked({n: seed_values(seeds, n, method, q) for n in norms}, higher_is_better=higher_is_better)
    if not order:
        return None
    best, biv, bvals = order[0]
    others = ", ".join(f"{n} {fmt_interval(iv)}" for n, iv, _ in order[1:])
    if len(order) == 1:
        return (f"{method}: only {norm_name(best)} has a value of {what} after phase {final}: "
                f"{fmt_interval(biv)}{_one_note(biv)}.")
    second, _, svals = order[1]
    p = paired(bvals, svals)
    note = _paired_note(p, best, second)
    if p.holds:
        return (f"{method} {best_phrase} {norm_name(best)}: {what} after phase {final} {fmt_interval(biv)} "
                f"(vs {others}); {note}")
    return (f"{method}: {what} after phase {final} is not distinguishable between {norm_name(best)} "
            f"and {norm_name(second)}: {best} {fmt_interval(biv)} (best mean), vs {others}; {note}")


def _method_across_norms(seeds: pd.DataFrame, method: str, norms: Sequence[str], final: int) -> list[str]:
    """For one method: the norm with the least final-phase forgetting (whether base-class mAP
    rose instead) and the norm with the highest BWT; with one norm, its forgetting alone."""
    forg = ranked({n: seed_values(seeds, n, method, "forgetting") for n in norms}, higher_is_better=False)
    if not forg:
        out = [f"{method}: no final-phase forgetting is available."]
    elif len(norms) == 1:
        out = [f"{method}: forgetting of base-class mAP after phase {final} "
               f"{fmt_interval(forg[0][1])}{_one_note(forg[0][1])}."]
    else:
        sentence = _norm_ranking(seeds, method, "forgetting", norms, higher_is_better=False,
                                 what="forgetting of base-class mAP", best_phrase="forgets least with", final=final)
        best, biv, bvals = forg[0]
        zero = paired(bvals, {s: 0.0 for s in bvals})
        if zero.sign < 0:
            sentence += f"; negative: base-class mAP rose with {best} ({verdict(zero)})"
        elif biv.mean < 0:
            sentence += (f"; {best}'s mean is negative, but a rise of base-class mAP is not "
                         f"distinguishable from none ({verdict(zero)})")
        out = [sentence + "."]
    if len(norms) > 1:
        sentence = _norm_ranking(seeds, method, "bwt", norms, higher_is_better=True, what="BWT",
                                 best_phrase="has the highest backward transfer with", final=final)
        if sentence:
            out.append(sentence + ".")
    return out


def _gap_ranking(norm: str, order: list[tuple[Any, Interval, dict]]) -> str:
    """Which method of ``norm`` closes the largest share of the finetune-to-joint gap (``order``:
    the methods' shares, :func:`~cilaudio.reporting.statistics.ranked`)."""
    best, biv, bvals = order[0]
    others = "; ".join(f"{m} {_pct(iv)}" for m, iv, _ in order[1:])
    if len(order) == 1:
        return (f"With {norm}, {best} closes {_pct(biv)} of the finetune-to-joint gap in final "
                f"base-class mAP (per seed; the only method besides the bounds){_one_note(biv)}")
    second, _, svals = order[1]
    p = paired(bvals, svals)
    note = _paired_note(p, best, second, scale=100, unit=" pp", digits=1)
    if p.holds:
        return (f"With {norm}, {best} closes the largest share of the finetune-to-joint gap in final "
                f"base-class mAP: {_pct(biv)} (per seed; others: {others}); {note}")
    return (f"With {norm}, no method closes a distinguishably larger share of the finetune-to-joint "
            f"gap in final base-class mAP: {best} {_pct(biv)} (largest mean, per seed; others: "
            f"{others}); {note}")


def _gap_finding(comp: pd.DataFrame, seeds: pd.DataFrame, norm: str) -> tuple[str, bool, list[tuple]]:
    """The sentence on the finetune-to-joint gap of ``norm``, whether the norm's gap is not valid
    (left out of the comparison over norms), and its ``(norm, method, {seed: share})`` entries for
    that comparison."""
    c = comp[comp["norm"] == norm]
    present = set(c["method"])
    if not set(BOUNDS) <= present:
        absent = " and ".join(b for b in BOUNDS if b not in present)
        return f"With {norm}, the gap to close is undefined: {absent} was not run.", True, []
    cand = [m for m in c["method"] if m not in BOUNDS]
    if not cand:
        return f"With {norm}, no method besides finetune and joint was run.", False, []
    order = ranked({m: seed_values(seeds, norm, m, "gap_closed_base") for m in cand}, higher_is_better=True)
    if not order:
        return f"With {norm}, the finetune-to-joint gap is zero or missing: no gap share can be computed.", True, []
    lo, hi = seed_values(seeds, norm, LOWER, "base_final"), seed_values(seeds, norm, UPPER, "base_final")
    gap = paired(hi, lo)
    text = _gap_ranking(norm, order)
    if gap.diff.n and gap.diff.mean <= 0:
        inverted = ("the bounds are inverted here" if gap.holds else
                    "joint does not end distinguishably above finetune here")
        text += (f"; {inverted} (joint {fmt_interval(interval(hi.values()))} vs finetune "
                 f"{fmt_interval(interval(lo.values()))}, joint vs finetune {describe(gap)}), so the share "
                 "does not measure progress towards joint.")
        return text, True, []
    if not gap.holds:
        text += (f"; joint vs finetune {describe(gap)}, so the gap itself is not established and the "
                 "share is uncertain")
    return text + ".", False, [(norm, m, v) for m, _, v in order]


def _overall_gap_sentence(overall: list[tuple], skipped: list[str]) -> str:
    """The (norm, method) that closes the largest share of the gap over all norms."""
    order = ranked({(n, m): v for n, m, v in overall}, higher_is_better=True)
    (norm, method), biv, bvals = order[0]
    tail = f" (not counting {', '.join(dict.fromkeys(skipped))}: no valid gap)." if skipped else "."
    if len(order) == 1:
        return (f"Over all norms, only {method} with {norm_name(norm)} has a share of the gap to compare: "
                f"{_pct(biv)}" + tail)
    (n2, m2), _, svals = order[1]
    p = paired(bvals, svals)
    note = _paired_note(p, f"{method} ({norm})", f"{m2} ({n2})", scale=100, unit=" pp", digits=1)
    if p.holds:
        return (f"Over all norms, the largest share of the gap is closed by {method} with "
                f"{norm_name(norm)}: {_pct(biv)}; {note}" + tail)
    return (f"Over all norms, no (norm, method) closes a distinguishably larger share of the gap: "
            f"the largest mean is {method} with {norm_name(norm)}, {_pct(biv)}; {note}" + tail)


def comparison_findings(table: pd.DataFrame, *, cka: pd.DataFrame | None = None,
                        norms: Sequence[str] | None = None,
                        cka_by_seed: pd.DataFrame | None = None) -> list[str]:
    """Plain-language statements computed from ``table`` (and the CKA summary ``cka``).

    Every ranking is backed by a paired comparison over seeds (:mod:`cilaudio.stats`): the best
    and the runner-up are compared on the seeds both have; the best is named as such only when
    that difference holds (its 95 % t-interval excludes 0), otherwise the sentence says the two
    are not distinguishable at this number of seeds. Norms are paired by seed too (same seed,
    different phase-0 model). For each method: the norm with the least final-phase forgetting
    of base-class mAP and the norm with the highest BWT. For each norm: the method (other than
    finetune and joint) that closes the largest share of the finetune-to-joint gap in final
    base-class mAP (per seed), then the largest over all norms. From ``cka``
    (:func:`~cilaudio.reporting.statistics.cka_layer_summary`; ``cka_by_seed``: the same per
    seed, for the pairing): per method, the norm whose norm layers drift most, and in how many
    runs late blocks / norm layers drift more.
    """
    comp = comparison_table(table, norms=norms)
    if comp.empty:
        return ["No results are available."]
    seeds = seed_table(table, norms=norms)
    norm_list = list(dict.fromkeys(comp["norm"]))
    final = int(comp["final_phase"].max())
    out: list[str] = []
    if len(norm_list) == 1:
        out.append(f"Only one norm ({norm_list[0]}) has results: there is nothing to compare across norms.")
    for method in dict.fromkeys(comp["method"]):
        out += _method_across_norms(seeds, method, norm_list, final)
    overall: list[tuple] = []
    skipped: list[str] = []
    for norm in norm_list:
        text, invalid, entries = _gap_finding(comp, seeds, norm)
        out.append(text)
        skipped += [norm] if invalid else []
        overall += entries
    if len(norm_list) > 1 and overall:
        out.append(_overall_gap_sentence(overall, skipped))
    if cka is not None and not cka.empty:
        out.extend(_cka_findings(cka, cka_by_seed))
    return out


def _cka_findings(cka: pd.DataFrame, by_seed: pd.DataFrame | None = None) -> list[str]:
    """Counts over the (norm, method) runs and the norm whose norm layers drift most, backed by a
    paired comparison over the CKA files' seeds (the per-run numbers are in the page's CKA table)."""
    out = []
    n_seeds = int(cka["n_seeds"].max()) if len(cka) else 0
    of = f" (mean diagonal CKA of {seeds_word(n_seeds)} per run)"
    valid = cka[np.isfinite(cka["late"]) & np.isfinite(cka["early"])]
    if len(valid):
        n_late = int((valid["late"] < valid["early"]).sum())
        out.append(f"Later blocks ({valid['late_blocks'].iloc[0]}) drift more than earlier ones "
                   f"({valid['early_blocks'].iloc[0]}; lower mean diagonal CKA) in {n_late} of {len(valid)} "
                   f"(norm, method) runs{of}.")
    valid = cka[np.isfinite(cka["norm_layers"]) & np.isfinite(cka["conv_layers"])]
    if len(valid):
        n_norm = int((valid["norm_layers"] < valid["conv_layers"]).sum())
        out.append(f"Norm layers drift more than conv layers in {n_norm} of {len(valid)} (norm, method) runs{of}.")
    if cka["norm"].nunique() > 1:
        per_seed = by_seed if by_seed is not None else cka.assign(seed=-1)
        for method in dict.fromkeys(cka["method"]):
            sentence = _norm_layer_drift(per_seed, method)
            if sentence:
                out.append(sentence)
    return out


def _norm_layer_drift(per_seed: pd.DataFrame, method: str) -> str | None:
    """With which norm the norm layers of ``method`` drift most (lowest mean diagonal CKA), said
    only where the paired difference with the runner-up holds; None with fewer than two norms."""
    g = per_seed[(per_seed["method"] == method) & np.isfinite(per_seed["norm_layers"])]
    vals = {n: {int(s): float(v) for s, v in zip(h["seed"], h["norm_layers"])}
            for n, h in g.groupby("norm", sort=False)}
    order = ranked(vals, higher_is_better=False)
    if len(order) < 2:
        return None
    (best, biv, bvals), (second, _, svals) = order[0], order[1]
    others = ", ".join(f"{n} {fmt_interval(iv)}" for n, iv, _ in order[1:])
    p = paired(bvals, svals)
    note = _paired_note(p, best, second)
    if p.holds:
        return (f"{method}: the norm layers drift most with {norm_name(best)} (mean diagonal CKA "
                f"{fmt_interval(biv)}, vs {others}); {note}.")
    return (f"{method}: the norm layers' mean diagonal CKA is lowest with {norm_name(best)} "
            f"({fmt_interval(biv)}, vs {others}), but which norm's norm layers drift most is not "
            f"distinguishable: {note}.")
