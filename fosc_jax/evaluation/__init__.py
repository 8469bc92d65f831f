"""Evaluation: the attack suite (clean, FGSM, PGD-10/20, CW-inf, black-box, eps sweep),
honesty checks against gradient masking, and results tables.

    record = evaluate_classifier(classifier, x_test, y_test)          # arrays in, dict out
    records = evaluate_workdirs(["runs/a", "runs/b"], out="runs/eval")  # latest checkpoints
"""
from fosc_jax.evaluation import honesty, suite, tables
from fosc_jax.evaluation.api import (evaluate_classifier, evaluate_workdirs, parse_eps_list,
                                     eval_subset_indices)
from fosc_jax.evaluation.honesty import noise_tolerance, run_checks
from fosc_jax.evaluation.suite import (ATTACKS, DEFAULT_ATTACKS, AttackSpec, Suite,
                                       accuracy_entry, attack_spec, worst_case)
from fosc_jax.evaluation.tables import csv_table, markdown_table, read_results, write_results

__all__ = ["evaluate_classifier", "evaluate_workdirs", "parse_eps_list", "eval_subset_indices",
           "ATTACKS", "DEFAULT_ATTACKS", "AttackSpec", "Suite", "accuracy_entry", "attack_spec",
           "worst_case", "noise_tolerance", "run_checks", "markdown_table", "csv_table",
           "write_results", "read_results", "honesty", "suite", "tables"]
