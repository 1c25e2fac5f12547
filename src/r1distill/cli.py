"""Command line: parse arguments, load the recipe, dispatch to a stage. Nothing else."""

from __future__ import annotations

import argparse
import sys

EXAMPLES = """examples:
  r1distill run recipes/quickstart.yaml
  r1distill generate recipes/quickstart.yaml generate.num_samples=2 generate.source.num_problems=8
  r1distill generate recipes/quickstart.yaml --shard 0/4   # worker 0 of 4, all writing one output dir
  r1distill eval eval.models=[smollm2-135m-instruct] eval.benchmarks=[gsm8k] eval.max_new_tokens=256
  r1distill report runs/quickstart
  r1distill models

A recipe is a YAML file with sections generate/curate/train/eval (see recipes/quickstart.yaml);
each `key=value` override is parsed as YAML and unknown keys are errors."""

STAGE_HELP = {
    "run": "run every stage in order (skipping stages already done for this config), then write the report",
    "generate": "teacher writes traces (with top-k log-probs) for a problem source",
    "curate": "verify answers against the gold and filter the traces",
    "train": "train the student on curated traces (SFT or offline KD)",
    "eval": "score models on benchmarks (pass@1, maj@k, lengths)",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="r1distill", description="R1-style reasoning distillation.",
                                epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True)
    for name, text in STAGE_HELP.items():
        s = sub.add_parser(name, help=text, description=text, epilog=EXAMPLES,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        s.add_argument("args", nargs="*", metavar="[RECIPE.yaml] [key=value ...]",
                       help="an optional recipe file, then overrides such as train.epochs=1")
        s.add_argument("--overwrite", action="store_true", help="discard this stage's earlier outputs")
        # SUPPRESS: without it the subcommand's default (False) would override `r1distill --debug run …`.
        s.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks on errors")
        if name in ("train", "run"):
            s.add_argument("--resume", action="store_true",
                           help="continue training from the latest checkpoint in the student's work dir")
        if name == "generate":
            s.add_argument("--shard", metavar="I/N", help="generate only worker I's share of the problems "
                           "(prompt_id hash mod N), so N workers can fill one output dir")
    r = sub.add_parser("report", help="write report.md for a run dir")
    r.add_argument("run_dir")
    sub.add_parser("models", help="list the built-in models and what the model cache ($R1DISTILL_HOME) holds")
    return p


def _split(args: list[str]) -> tuple[str | None, list[str]]:
    if args and "=" not in args[0]:
        return args[0], args[1:]
    return None, args


def main(argv: list[str] | None = None) -> int:
    ns = _parser().parse_args(argv)
    from r1distill.config import UserError

    try:
        return _dispatch(ns)
    except UserError as e:
        if ns.debug:
            raise
        print(f"r1distill: error: {e}", file=sys.stderr)
        return 2


def _dispatch(ns: argparse.Namespace) -> int:
    if ns.command == "models":
        from r1distill.models import list_models

        for m in list_models():
            state = f"cached, {m['bytes'] / 1e6:.0f} MB at {m['path']}" if m["cached"] else "not converted yet"
            print(f"{m['name']}  ({m['license']}) {m['description']}\n    {state}")
        return 0
    if ns.command == "report":
        from r1distill.report import write_report

        print(write_report(ns.run_dir))
        return 0
    recipe_path, overrides = _split(ns.args)
    if ns.overwrite and ns.command != "run":
        overrides.append(f"{ns.command}.overwrite=true")
    if getattr(ns, "resume", False):
        overrides.append("train.resume=true")
    if getattr(ns, "shard", None):
        overrides.append(f"generate.shard={ns.shard}")
    if ns.command == "run":
        from r1distill import pipeline

        pipeline.run(recipe_path, overrides)
        return 0
    from r1distill.config import load_recipe, stage_config
    from r1distill.pipeline import STAGES

    recipe = load_recipe(recipe_path, overrides)
    for name, cls, stage_run in STAGES:
        if name == ns.command:
            print(stage_run(stage_config(recipe, name, cls)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
