"""Section 3 in RESULTS.md: the per-model table, the FOSC-vs-loss rank correlation and the
table of the paper's claims with a verdict each (docs/method.md, "Claims over seeds and
runs")."""
from __future__ import annotations

from typing import Optional

import numpy as np

from fosc_jax.reproduce import section3, stats


def section3_lines(all_runs, s3_runs, scale, out, records, s3_records, comparisons,
                   metrics) -> tuple[list[str], Optional[str]]:
    """Section 3 (Figures 2 and 3), the FOSC-vs-loss claim and the claims table; and the
    claim's answer in one sentence for the README (None before it can be answered).
    ``metrics``: each trained run's metrics rows, by name (the report has read them)."""
    L = ["", "## Section 3: convergence quality against robustness", ""]
    if not s3_records:
        return L + ["Not evaluated yet (stage `section3`, after the Section 3 runs are "
                    "trained)."], None
    std_sd = next((c for c in comparisons if c.label == "PGD-20"), None)
    sd = (stats.mean_sd(std_sd.standard)[1] if std_sd is not None and len(std_sd.standard) > 1
          else None)
    L += [f"Scale: the first {scale.s3_train_images or 60000:,} training images, "
          f"{scale.s3_epochs} epochs (lr / 10 at the same fractions as the paper), one seed "
          f"(0) per model; tested on a seeded subset of {scale.s3_test_images or 10000:,} test "
          "images (PGD-20 with step eps/4 is the paper's evaluation, shared by every model). "
          "One seed per model: a difference between two of these models is only called when "
          "it exceeds 2.77 x the seed SD of Standard measured above (the 95% half-width of a "
          "difference of two single-seed runs)"
          + (f", i.e. {2.77 * sd:.1f} points." if sd is not None else ".")
          + _cost_sentence(s3_runs, metrics, s3_records), ""]
    L += section3.section3_lines(s3_runs, scale, out, s3_records)
    points = section3.claim_points(all_runs, out, records, s3_records)
    adv = section3.rank_advantage(points)     # the bootstrap, once for both tables
    rows, answer = section3.claim_rows(points, adv)
    L += ["", "### Does the last epoch's FOSC predict final robustness better than the loss?", "",
          "Every run with a training attack, FOSC samples and a final PGD-20 number "
          f"({len(points)} runs: the Table 1 runs (seeds, Curriculum, the surrogate) on the full "
          "test set, the Section 3 runs on their subset; Unsecured and the collapsed demo have no meaningful FOSC). Features of the "
          "last epoch's sample of 2,000 training adversarial examples, each at the iterate "
          "where its attack stopped. The two studies train at different scales (the Table 1 runs "
          f"on {scale.train_images or 60000:,} images for {scale.epochs} epochs, the Section 3 "
          f"runs on {scale.s3_train_images or 60000:,} for {scale.s3_epochs}), so their levels "
          "of loss and of robustness differ for reasons no feature explains: each run is "
          "ranked only against the runs of its own study, the within-study ranks are pooled "
          "(the Pearson correlation of the rank fractions; Spearman's rho for one study) and "
          "the bootstrap resamples runs within each study.", ""] + rows
    if answer:
        L += ["", f"**Answer.** {answer}"]
    L += ["", "### The paper's claims at this scale", "",
          "| claim | paper | ours | holds at this scale? |", "|---|---|---|---|"]
    L += _claims_table(s3_runs, s3_records, comparisons, points, sd, adv)
    return L, None if adv is None else _readme_sentence(points, adv)


def _readme_sentence(points, adv) -> str:
    """The FOSC-vs-loss answer with its interval, for the README's verdict."""
    verdict = stats.verdict(adv, null=0.0, above="FOSC does", below="the loss does better",
                            n=section3.runs_label(points))
    return ("Section 3, does the last epoch's training FOSC predict final PGD-20 better than "
            f"the loss? |rho(FOSC mean)| - |rho(loss mean)| = {adv.estimate:+.2f} "
            f"[{adv.low:+.2f}, {adv.high:+.2f}]"
            + (" (ranks within studies)" if len({p.study for p in points}) > 1 else "")
            + f": {verdict}.")


def _cost_sentence(s3_runs, metrics, s3_records) -> str:
    """What the Section 3 runs cost on the machines that ran them (epoch and scoring time)."""
    from fosc_jax.reproduce import sections
    train = sum(sections.seconds(metrics.get(r.name, [])) for r in s3_runs)
    scored = sum(rec.get("eval_seconds", 0.0) for rec in s3_records.values())
    return (f" Cost: {train / 60:.0f} min of training epochs (wall clock, slow epochs listed "
            f"under Training) over {len(s3_runs)} runs and "
            f"{scored / 60:.0f} min of cross-tests.")


def _pgd20(records, name) -> Optional[float]:
    rec = records.get(name)
    return None if rec is None else 100.0 * rec["attacks"]["pgd20"]["accuracy"]


def _called(gap: float, sd: Optional[float]) -> Optional[bool]:
    """Is a difference between two single-seed runs beyond seed noise? (None: unknown)"""
    return None if sd is None else abs(gap) > 2.77 * sd


def _claims_table(s3_runs, s3, comparisons, points, sd, adv) -> list[str]:
    rows = []
    c = next((c for c in comparisons if c.label == "PGD-20"), None)
    if c is not None and c.difference is not None:
        d = c.difference
        rows.append(f"| Dynamic AT is more robust than Standard AT (PGD-20) | +0.65 (91.27 vs "
                    f"90.62, one run each) | {d.estimate:+.2f} [{d.low:+.2f}, {d.high:+.2f}] over "
                    f"{c.n} | {c.verdict()} |")
    for sweep, paper, label in (
            ("step_size", "step eps converges worst and is least robust; eps/4 and eps/8 best",
             "PGD-20 of models trained with step eps, eps/2, eps/4, eps/8"),
            ("num_steps", "more steps converge better and are more robust, with diminishing "
             "returns", "PGD-20 of models trained with 10, 20, 30, 40 steps of eps/6")):
        rs = [r for r in s3_runs if r.sweep == sweep and r.name in s3]
        if len(rs) < 2:
            continue
        vals = [_pgd20(s3, r.name) for r in rs]
        spread = max(vals) - min(vals)
        called = _called(spread, sd)
        best = rs[int(np.argmax(vals))]
        holds = ("not resolved: the models differ by less than seed noise" if called is False
                 else "unknown (no seed SD)" if called is None else
                 ("yes" if (sweep == "step_size" and (best.step_fraction or 0.25) <= 0.25) or
                  (sweep == "num_steps" and (best.steps or 10) >= 30) else "no")
                 + f": best {best.name}")
        rows.append(f"| {label} | {paper} | {', '.join(f'{v:.1f}' for v in vals)} | {holds} |")
    fp = [r for r in s3_runs if r.sweep == "fgsm" and r.name in s3]
    if len(fp) == 2:
        pgd, fgsm = (_pgd20(s3, n) for n in ("s3_pgd", "s3_fgsm_pgd"))
        gap = fgsm - pgd
        called = _called(gap, sd)
        holds = ("yes" if gap >= 0 or called is False else "no") if called is not None else "unknown"
        rows.append(f"| FGSM in early epochs, PGD later, is as robust as PGD throughout "
                    f"(Figure 3) | comparable or better | FGSM-then-PGD {fgsm:.1f} vs PGD {pgd:.1f} "
                    f"({gap:+.1f}) | {holds}"
                    + (" (within seed noise)" if called is False else "") + " |")
    if adv is not None:
        y, g = [p.pgd20 for p in points], [p.study for p in points]
        r, rl = (stats.stratified_spearman(v, y, g) for v in
                 ([p.fosc_mean for p in points], [p.loss_mean for p in points]))
        runs_label = section3.runs_label(points)
        holds = stats.verdict(adv, null=0.0, above="yes", below="no", n=runs_label)
        within = "within studies, " if len(set(g)) > 1 else ""
        rows.append(f"| Final FOSC tracks robustness; the loss does not (Figure 2) | lower FOSC, "
                    f"more robust; loss not consistent | {within}rho(FOSC mean, PGD-20) "
                    f"{r:+.2f}, rho(loss mean, PGD-20) {rl:+.2f}, "
                    f"n = {runs_label.removesuffix(' runs')} | {holds} |")
    return rows
