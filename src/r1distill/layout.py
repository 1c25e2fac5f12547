"""The run directory's contract: every directory and file name a stage writes and another stage (or `run`, eval's
aliases, the report) reads. Writers and readers take the names from here; tests/test_code_rules.py checks that no
other module of src spells one.

    runs/<run>/
      run.json                      what `run` was asked (RUN)
      traces/ scored/               shards, config.yaml, summary[-wIofN].json, manifest[-wIofN].json, the stamp
      curated/                      shards, stats.json, stats.md, rejected.jsonl, config.yaml, the stamp
      student_init/ students_init/  derived students (r1distill_derived.json)
      student/ students/<v>/        the model, r1distill_train_config.yaml, train_log.jsonl, summary.json, runs/
                                    (tensorboard: transformers' name), adapter/ (LoRA)
      student.work/                 checkpoint-N/ while training (transformers' names), the stamp
      eval/                         <model>/<bench>.jsonl and .meta.json, summary.json, results.md, maj_cache.json,
                                    config.yaml
      report.html report.md
    every stage dir: r1distill_stamp.json, its one stamp (the stage's rerun stamp and `run`'s record: rerun.py)
"""

from __future__ import annotations

# Where each stage writes inside a run directory (the contract `run` and `eval` aliases rely on).
LAYOUT = {
    "traces": "traces",
    "curated": "curated",
    "scored": "scored",  # curated traces with a teacher's top-k (the score stage)
    "student_init": "student_init",
    "student": "student",
    "eval": "eval",
    "students": "students",  # one dir per student variant of a recipe's `variants`
    "students_init": "students_init",  # a variant's derived student when it differs from `student_init`'s
}

RUN = "run.json"  # the run dir's record of the command and recipe (pipeline)
STAMP = "r1distill_stamp.json"  # a stage dir's one stamp: the stage's rerun stamp and `run`'s record (rerun.py)
CONFIG = "config.yaml"  # a stage's resolved config beside its outputs (a recipe for that stage)
TRAIN_CONFIG = "r1distill_train_config.yaml"  # train's, in the student dir (apart from the model's config.json)
SUMMARY = "summary.json"  # a stage's figures (generate, import, score, train, eval)
TRAIN_LOG = "train_log.jsonl"  # one record per logging step, then the summary record
CURATE_STATS = "stats.json"  # curate's funnel
CURATE_STATS_MD = "stats.md"
REJECTED = "rejected.jsonl"  # curate's rejected rows with the reason
RESULTS = "results.md"  # eval's accuracy table
MAJ_CACHE = "maj_cache.json"  # eval's maj@k answer comparisons, kept across reruns
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
DERIVED = "r1distill_derived.json"  # what a derived student was made from (models.derive_student)
BUILTIN_SOURCE = "r1distill_source.json"  # how a built-in model was converted (builtin_models)
ADAPTER = "adapter"  # a LoRA student's adapter, beside the merged model (train)
RESULT_META = ".meta.json"  # eval's record beside each result file: <bench>.meta.json (its fingerprint)
CACHE_META = "meta.json"  # a token cache entry's record (train/data.py)


def summary(tag: str = "") -> str:
    """A stage's summary file; a worker's (`tag` "-wIofN") has its own."""
    return f"summary{tag}.json"


def manifest(tag: str = "") -> str:
    """generate's list of shards and their (prompt_id, sample_idx) pairs, per worker."""
    return f"manifest{tag}.json"
