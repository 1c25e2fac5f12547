"""Command line: parse arguments, load the recipe, dispatch to a stage. Nothing else.

User errors (`r1distill.config.UserError`: a bad key, a missing file, a wrong column, an unreachable server) end
with one line on stderr and exit status 2, without a traceback; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import re
import sys

EXAMPLES = """examples:
  r1distill run recipes/quickstart.yaml
  r1distill generate recipes/quickstart.yaml generate.num_samples=2 generate.source.num_problems=8
  r1distill generate recipes/quickstart.yaml --shard 0/4   # worker 0 of 4, all writing one output dir
  r1distill eval eval.models=[smollm2-135m-instruct] eval.benchmarks=[gsm8k] eval.max_new_tokens=256
  r1distill report runs/quickstart
  r1distill models

A recipe is a YAML file with sections import or generate, curate, score, train, eval (see recipes/quickstart.yaml
and recipes/cpu-import.yaml);
each `key=value` override is parsed as YAML and unknown keys are errors.
`r1distill STAGE --help` lists that stage's keys with their defaults."""

STAGE_HELP = {
    "run": "run every stage in order (skipping stages already done for this config), then write the report",
    "import": "read a trace set you already have (OpenR1, OpenThoughts, s1K, chat/ShareGPT rows, your columns) "
              "into trace shards",
    "generate": "teacher writes traces (with top-k log-probs) for a problem source",
    "curate": "verify answers against the gold and filter the traces",
    "score": "a teacher's top-k log-probs over existing traces' tokens (a forward pass, no generation)",
    "train": "train the student on curated traces (SFT, offline KD, online KD or GKD)",
    "eval": "score models on benchmarks (pass@1 with CI, maj@k, lengths)",
}
STAGE_EXAMPLE = {
    "run": "r1distill run recipes/quickstart.yaml train.epochs=2",
    "import": "r1distill import run_dir=runs/mine import.source.path=openr1.jsonl import.source.format=openr1",
    "generate": "r1distill generate recipes/quickstart.yaml generate.num_samples=2 generate.source.num_problems=8",
    "curate": "r1distill curate recipes/quickstart.yaml curate.max_per_problem=1",
    "score": "r1distill score run_dir=runs/mine score.teacher=smollm2-135m-instruct score.backend=hf",
    "train": "r1distill train recipes/quickstart.yaml train.objective=sft train.epochs=1",
    "eval": "r1distill eval eval.models=[smollm2-135m-instruct] eval.benchmarks=[gsm8k] eval.max_new_tokens=256",
}
SOURCES_HELP = """problem sources (generate.source, and each entry of eval.benchmarks):
  gsm8k | math500 | aime24 | aime25 | amc23   a local <name>_test.jsonl (path=FILE_OR_DIR or $R1DISTILL_BENCHMARKS_DIR),
                                              else the Hugging Face hub
  synthetic                                   the built-in generator (eval: the frozen test set)
  {path: mine.jsonl}                          your file (.jsonl, .json, .parquet, .csv); a path alone means name: file
  {name: hf, path: org/dataset, split: test}  a hub dataset
columns maps our fields (id, problem, answer) to yours: a column, a list of columns joined by a space, or a
"{Col} ..." template. Worked example, svamp.jsonl with rows such as
  {"ID": "chal-1", "Body": "Jack had 8 pens and gave 3 away.", "Question": "How many pens are left?", "Answer": 5.0}
  r1distill eval eval.models=[smollm2-135m-instruct] eval.max_new_tokens=256 \\
    'eval.benchmarks=[{path: svamp.jsonl, columns: {id: ID, problem: [Body, Question], answer: Answer}}]'
grades problem "Jack had 8 pens and gave 3 away. How many pens are left?" against answer "5" (the same as a
template: problem: "{Body} {Question}"). Every row is checked first and all bad rows are listed (a duplicate id,
an answer the verifier cannot grade such as "twelve"); skip_bad_rows: true leaves them out, counted."""
CURATE_HELP = """traces you already have: `r1distill import` writes them into {run_dir}/traces (see its --help), then
  r1distill curate run_dir=runs/mine curate.decontaminate=[gsm8k]
curate.input_dir=DIR reads every *.parquet in DIR that has the trace schema (r1distill.data.traces.TRACE_SCHEMA)."""
IMPORT_HELP = """trace formats (import.source.format; import.sources: a list of such sources, imported in turn):
  openr1        OpenR1-Math-220k rows: problem, answer, generations (one trace each), is_reasoning_complete
  openthoughts  OpenThoughts / Bespoke-Stratos: system + conversations, <|begin_of_thought|> markers -> <think>
  sharegpt      conversations of {from, value}; the last assistant turn is the completion
  messages      OpenAI chat `messages`; the last assistant turn is the completion, the turns before it the prompt
  s1k           s1K: question, solution, thinking_trajectories, attempt
  columns       problem, answer, completion (+ finish_reason, solution), renamed by `columns:` (LIMO, your own)
A missing gold answer is taken from the reference solution's last \\boxed{}; a cut-off trace (unclosed <think>, no
end marker, the set's own flag) is finish_reason length. Files: .jsonl .json .parquet .csv .tsv; or a hub dataset
id (streamed). Example, then score it with a teacher and train by KD:
  r1distill import run_dir=runs/mine 'import.source={path: data/traces/openr1.parquet, format: openr1}'
  r1distill curate run_dir=runs/mine curate.decontaminate=[]
  r1distill score run_dir=runs/mine
  r1distill train run_dir=runs/mine train.input_dir=runs/mine/scored train.objective=kd"""
SCORE_HELP = """score reads {run_dir}/curated by default (score after curate: only kept traces cost a teacher pass) and
writes {run_dir}/scored, which train reads when a recipe has a score section (else set train.input_dir).
The teacher sees teacher_prompt (or prompt) and the traces' own completion_ids where they are its tokens, else
the completion text in its tokens. backend: hf (a forward pass), vllm (prompt_logprobs), openai (a vLLM server)."""
XTOK_HELP = """Check a teacher/student pair before a cross-tokenizer KD run (train.xtok). For one training row of the
recipe's train input (curated or scored traces with top-k and byte spans) it prints both tokenizations, the
byte-span groups, the teacher's top tokens at each group's base with the student id each maps to, and with the
student model each group's KD terms (sorted / exact / alm) and CE. Over --rows rows it counts the one-to-one groups
(one token each side, the same bytes) where the teacher's token maps to the student's own token: anything
else there is a broken map, and the run would teach the student the wrong tokens."""
STAGE_NOTES = {"generate": SOURCES_HELP, "eval": SOURCES_HELP, "curate": CURATE_HELP, "import": IMPORT_HELP,
               "score": SCORE_HELP}
# section -> (module, config dataclass); imported only to print --help
STAGE_CONFIGS = {"import": ("r1distill.ingest", "ImportConfig"),
                 "generate": ("r1distill.generate", "GenerateConfig"), "curate": ("r1distill.curate", "CurateConfig"),
                 "score": ("r1distill.score", "ScoreConfig"),
                 "train": ("r1distill.train", "TrainConfig"), "eval": ("r1distill.evaluate", "EvalConfig")}


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the epilog's layout and appends each option's default (not the positionals', which have none)."""

    def _get_help_string(self, action):
        return action.help if not action.option_strings else super()._get_help_string(action)


# ---- --help: a stage's config keys with their defaults, from its dataclass ------------------------
def _fmt(value) -> str:
    """A default as it would be written in YAML (short)."""
    if dataclasses.is_dataclass(value):
        defaults = type(value)()
        changed = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)
                   if getattr(value, f.name) != getattr(defaults, f.name)}
        return "{" + ", ".join(f"{k}: {_fmt(v)}" for k, v in changed.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) + "}"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _comments(cls) -> dict[str, str]:
    """Each field's help from the dataclass's source: the `# comment` block just above the field, then its inline
    `# comment` with the comment lines that continue it (indented past the `#`), joined into one text."""
    try:
        src = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    out: dict[str, str] = {}
    above: list[str] = []
    last = None  # the field whose inline comment a continuation line extends
    for line in src.splitlines():
        comment = re.match(r"\s{4}#(\s*)(.*)$", line)
        if comment:
            if last and len(comment[1]) >= 3:  # "#    more" under an inline comment continues it
                out[last] += " " + comment[2].strip()
            else:
                above.append(comment[2].strip())
                last = None
            continue
        m = re.match(r"\s{4}(\w+):([^#]*?)(?:#\s*(.*))?$", line)
        if m and not m[1].startswith("_") and m[1] not in out:
            out[m[1]] = " ".join([*above, m[3] or ""]).strip()
            last = m[1] if m[3] else None
        else:
            last = None
        above = []
    return {k: v for k, v in out.items() if v}


def config_keys(cls, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, comment) for every field of a config dataclass, nested dataclasses expanded."""
    import typing

    hints = typing.get_type_hints(cls)
    notes = _comments(cls)
    rows = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp) and default is not None:
            rows.append((f"{prefix}{f.name}", "", notes.get(f.name, "")))
            rows += config_keys(tp, f"{prefix}{f.name}.")
        else:
            rows.append((f"{prefix}{f.name}", _fmt(default), notes.get(f.name, "")))
    return rows


def stage_keys_help(section: str) -> str:
    module, name = STAGE_CONFIGS[section]
    cls = getattr(importlib.import_module(module), name)
    rows = config_keys(cls)
    width = min(max(len(k) for k, _, _ in rows) + 2, 30)
    dwidth = min(max(len(d) for _, d, _ in rows) + 2, 34)
    lines = [f"{section} keys (recipe section `{section}:`, or overrides {section}.KEY=VALUE): key, default, meaning"]
    for key, default, note in rows:
        # a key or default longer than its column still keeps a space before the next one
        lines.append(f"  {key:<{width - 1}} {default:<{dwidth - 1}} {note}".rstrip())
    return "\n".join(lines)


def _epilog(name: str, full: bool) -> str:
    text = f"example:\n  {STAGE_EXAMPLE[name]}\n"
    if not full:
        return text
    if name == "run":
        from r1distill.config import SHARED_KEYS

        return (text + f"\ntop-level keys: {', '.join(SHARED_KEYS)} (filled into every section that has them), "
                "and one section per stage: import or generate, curate, score (optional), train, eval. The "
                "student is train.student.\n"
                "\nEach section's keys and defaults: r1distill import|generate|curate|score|train|eval --help")
    notes = f"\n{STAGE_NOTES[name]}\n" if name in STAGE_NOTES else ""
    return text + notes + "\n" + stage_keys_help(name)


def _parser(full_help: bool = False) -> argparse.ArgumentParser:
    """The argument parser; `full_help` adds each stage's keys to its help (this imports the stages)."""
    p = argparse.ArgumentParser(prog="r1distill", description="R1-style reasoning distillation.",
                                epilog=EXAMPLES, formatter_class=_Formatter)
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in STAGE_HELP.items():
        s = sub.add_parser(name, help=text, description=text, epilog=_epilog(name, full_help),
                           formatter_class=_Formatter)
        s.add_argument("args", nargs="*", metavar="[RECIPE.yaml] [key=value ...]",
                       help="an optional recipe file, then overrides such as train.epochs=1")
        if name != "run":  # `run` skips finished stages by their config hash; delete the run dir to start over
            s.add_argument("--overwrite", action="store_true", help="discard this stage's earlier outputs")
        # SUPPRESS: without it the subcommand's default (False) would override `r1distill --debug run …`.
        s.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show full tracebacks on errors (default: off)")
        if name in ("train", "run"):
            s.add_argument("--resume", action="store_true",
                           help="continue training from the latest checkpoint in the student's work dir")
        if name == "generate":
            s.add_argument("--shard", metavar="I/N", help="generate only worker I's share of the problems "
                           "(prompt_id hash mod N), so N workers can fill one output dir")
        if name == "score":
            s.add_argument("--shard", metavar="I/N", help="score only input shards I, I+N, I+2N, ..., so N workers "
                           "can fill one output dir")
    r = sub.add_parser("report", help="write report.html (self-contained) and report.md with plots for a run dir",
                       description="Write RUN_DIR/report.html (one self-contained file, plots embedded) and "
                       "RUN_DIR/report.md with its plots in RUN_DIR/report_files/, from the stages' outputs.",
                       epilog="example:\n  r1distill report runs/quickstart", formatter_class=_Formatter)
    r.add_argument("run_dir", help="a run dir made by `r1distill run` or by the stages one by one")
    x = sub.add_parser("xtok-inspect", help="check a teacher/student tokenizer pair for cross-tokenizer KD: both "
                       "tokenizations of a trace, the byte-span groups, the shared-token map, per-group KD terms",
                       description=XTOK_HELP, epilog="example:\n  r1distill xtok-inspect recipes/cpu-xtok.yaml --row 3",
                       formatter_class=_Formatter)
    x.add_argument("args", nargs="*", metavar="[RECIPE.yaml] [key=value ...]",
                   help="the recipe whose train section (or variant) has the pair, then overrides")
    x.add_argument("--variant", help="the recipe variant to read train settings from (default: the first one with "
                   "train.xtok, else train)")
    x.add_argument("--row", type=int, default=0, help="the training row shown in full")
    x.add_argument("--rows", type=int, default=200, help="rows the map check reads")
    x.add_argument("--student", metavar="PATH", help="a student model for the per-group KD terms (default: the "
                   "run's starting point, derived as train would)")
    x.add_argument("--no-model", action="store_true", help="tokenizers only: no student model, no KD terms")
    x.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show full tracebacks on errors (default: off)")
    sub.add_parser("models", help="list the built-in models and what the model caches hold, with sizes",
                   description="List the built-in models (converted once into $R1DISTILL_HOME) and the models in "
                   "the Hugging Face cache, with their sizes on disk.", epilog="example:\n  r1distill models",
                   formatter_class=_Formatter)
    return p


def _split(args: list[str]) -> tuple[str | None, list[str]]:
    if args and "=" not in args[0]:
        return args[0], args[1:]
    return None, args


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    ns = _parser(full_help=any(a in ("-h", "--help") for a in argv)).parse_args(argv)
    from r1distill.config import UserError

    try:
        rc = _dispatch(ns)
    except UserError as e:
        if ns.debug:
            raise
        print(f"r1distill: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if ns.debug:
            raise
        print("r1distill: interrupted (run the same command again to resume)", file=sys.stderr)
        return 130
    _close_distributed()
    return rc


def _close_distributed() -> None:
    """Under `accelerate launch`/torchrun, destroy the process group once the command has succeeded on this rank.
    Left to interpreter teardown, gloo's threads can be destroyed un-joined ("terminate called without an active
    exception", SIGABRT at exit, after the work is done) and NCCL warns of a leak. Not after an error: destroying while
    other ranks still wait in a collective can hang (torchtitan#1342)."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def _models() -> int:
    from r1distill.models import list_models, r1distill_home

    print(f"Built-in models (converted once into {r1distill_home()}, $R1DISTILL_HOME):")
    for m in list_models():
        state = (f"cached, {_size(m['bytes'])} at {m['path']}" if m["cached"]
                 else "not converted yet (done on first use)")
        print(f"  {m['name']}  ({m['license']}) {m['description']}\n      {state}")
    from huggingface_hub import constants, scan_cache_dir

    where = constants.HF_HUB_CACHE
    try:
        repos = sorted(scan_cache_dir(where).repos, key=lambda r: r.repo_id)
    except Exception:  # no cache dir yet, or one the scanner cannot read: nothing to list
        repos = []
    print(f"Hugging Face cache ({where}): {len(repos)} repos" + (":" if repos else ""))
    for r in repos:
        print(f"  {r.repo_type:<8} {r.repo_id}  {_size(r.size_on_disk)}")
    return 0


def _dispatch(ns: argparse.Namespace) -> int:
    if ns.command == "models":
        return _models()
    if ns.command == "report":
        from pathlib import Path

        from r1distill.config import UserError
        from r1distill.report import write_report

        if not Path(ns.run_dir).is_dir():
            raise UserError(f"Run dir not found: {ns.run_dir} (give the run_dir of a recipe, e.g. runs/quickstart)")
        html = write_report(ns.run_dir)
        print(f"{html}\n{html.with_suffix('.md')}")
        return 0
    recipe_path, overrides = _split(ns.args)
    if ns.command == "xtok-inspect":
        return _xtok_inspect(ns, recipe_path, overrides)
    if getattr(ns, "overwrite", False):
        overrides.append(f"{ns.command}.overwrite=true")
    if getattr(ns, "resume", False):
        overrides.append("train.resume=true")
    if getattr(ns, "shard", None):
        overrides.append(f"{ns.command}.shard={ns.shard}")
    if ns.command == "run":
        from r1distill import pipeline

        pipeline.run(recipe_path, overrides)
        return 0
    from r1distill.config import load_recipe, stage_config
    from r1distill.pipeline import STAGES, build_configs

    recipe = load_recipe(recipe_path, overrides)
    for name, cls, stage_run in STAGES:
        if name == ns.command:
            # eval's model aliases mean what they mean in `run` (`students`, a named student's `student_init`)
            print(stage_run(build_configs(recipe)["eval"] if name == "eval" else stage_config(recipe, name, cls)))
    return 0


def _xtok_inspect(ns: argparse.Namespace, recipe_path: str | None, overrides: list[str]) -> int:
    from r1distill.config import UserError, load_recipe
    from r1distill.pipeline import build_configs
    from r1distill.train.xtok import inspect as xtok_inspect

    configs = build_configs(load_recipe(recipe_path, overrides))
    trains = {k.partition(":")[2] or "train": v for k, v in configs.items() if k.partition(":")[0] == "train"}
    if ns.variant is not None and ns.variant not in trains:
        raise UserError(f"--variant {ns.variant!r}: the recipe's train configs are {', '.join(trains)}")
    name = ns.variant or next((k for k, v in trains.items() if v.xtok is not None), next(iter(trains)))
    cfg = trains[name]
    model = None if ns.no_model else xtok_inspect.load_student(cfg, ns.student)
    print(xtok_inspect.inspect(cfg, row=ns.row, rows=ns.rows, model=model))
    return 0


if __name__ == "__main__":
    sys.exit(main())
