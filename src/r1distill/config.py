"""YAML recipe -> per-stage dataclasses.

A recipe is a YAML mapping with a few shared top-level keys (`run_dir`, `seed`, `teacher`) and one section
per stage (`import` or `generate`, `curate`, `score`, `train`, `eval`). Command-line
overrides are `dotted.key=value`, the value parsed as YAML. Every key must name a dataclass
field: a misspelt key raises `ConfigError` naming it (and the closest field), never a silent
default. Stage configs are built by `stage_config`, which copies the shared keys into a
section when the section's dataclass has a field of that name and the section leaves it unset.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from r1distill import layout
from r1distill.layout import LAYOUT  # the stages import it from here too

T = TypeVar("T")

SHARED_KEYS = ("run_dir", "seed", "teacher")
STAGES = ("import", "generate", "curate", "score", "train", "eval")
TOP_LEVEL_KEYS = (*SHARED_KEYS, *STAGES, "variants", "name", "description")

VARIANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def model_dirname(label: str) -> str:
    """The file-safe name of an eval model label (a hub name `org/model`, an alias `student:kd`)."""
    return label.replace("/", "_").replace(":", "_")


def variant_sections(recipe: dict) -> dict[str, dict]:
    """The recipe's student variants as full `train` sections: each variant's keys deep-merged over `train`,
    its output in `{run_dir}/students/<name>`. Empty without `variants`.

    ```yaml
    variants:
      sft: {objective: sft}
      kd_rkl: {objective: kd, loss: {divergence: reverse_kl}}
      kd_16: {objective: kd, student: {derive_from: teacher, num_layers: 16}}
      kd_op: {objective: on_policy, student: {name: "student:kd"}}   # starts from variant kd's student
    ```
    `student: {name: "student:<variant>"}` starts from the student of a variant listed before it.
    """
    variants = recipe.get("variants")
    if variants is None:
        return {}
    if not isinstance(variants, dict) or not variants:
        raise ConfigError(f"variants must be a non-empty mapping of name -> train settings, got {variants!r}")
    base = dict(recipe.get("train") or {})
    if clash := [k for k in ("output_dir", "init_dir") if k in base]:
        raise ConfigError(f"train.{clash[0]} cannot be used with variants: each variant's student goes to "
                          "{run_dir}/students/<name>")
    run_dir = base.get("run_dir", recipe.get("run_dir", "runs/default"))
    out = {}
    for name, over in variants.items():
        if not isinstance(name, str) or not VARIANT_NAME.match(name):
            raise ConfigError(f"variants: name {name!r} must be letters, digits, '_', '.' or '-' (it names a dir)")
        if over is not None and not isinstance(over, dict):
            raise ConfigError(f"variants.{name} must be a mapping of train settings, got {over!r}")
        section = _deep_merge(base, over or {})
        student = (over or {}).get("student")
        if isinstance(student, dict) and student.get("name"):  # a named start replaces the base's derivation
            section["student"] = dict(student)
            start = str(student["name"])
            if start.startswith("student:"):  # another variant's student, trained first (on-policy from kd)
                if start.partition(":")[2] not in out:
                    raise ConfigError(f"variants.{name}.student.name: {start!r} names no variant listed before "
                                      f"{name} ({', '.join(out) or 'none'}); a variant starts from an earlier one")
                section["student"]["name"] = out[start.partition(":")[2]]["output_dir"]
        if "output_dir" in (over or {}):
            raise ConfigError(f"variants.{name}.output_dir: a variant's student goes to {run_dir}/students/{name}")
        section["output_dir"] = str(Path(run_dir) / LAYOUT["students"] / name)
        # a derived student's start: its own when the variant derives another, else the run dir's, named here so
        # that a start of another derivation there is moved aside and replaced (train.run.init_dir)
        other = section.get("student") != base.get("student")
        init = Path(run_dir) / LAYOUT["students_init"] / name if other else Path(run_dir) / LAYOUT["student_init"]
        section["init_dir"] = str(init)
        out[name] = section
    return out


def _deep_merge(base: dict, over: dict) -> dict:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        elif key == "student" and isinstance(value, dict) and isinstance(merged.get(key), str):
            merged[key] = value  # a named student replaced by a derived one (or the reverse): no merge
        else:
            merged[key] = value
    return merged


class UserError(Exception):
    """A mistake the user can fix (bad key, missing file, wrong column): printed without a traceback."""


class ConfigError(UserError):
    pass


def parse_worker(shard: str | None, key: str) -> tuple[int, int] | None:
    """(i, N) from a `shard: "i/N"` setting (`key` names it in the error), or None when it is unset."""
    if shard is None:
        return None
    m = re.fullmatch(r"(\d+)/(\d+)", str(shard).strip())
    if not m or not int(m[1]) < int(m[2]):
        raise ConfigError(f"{key} must be i/N with 0 <= i < N (e.g. 0/4), got {shard!r}")
    return int(m[1]), int(m[2])


def load_recipe(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Read a recipe YAML (or start empty) and apply `key=value` overrides."""
    recipe: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"Recipe file not found: {p}")
        try:
            recipe = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from None
        if not isinstance(recipe, dict):
            raise ConfigError(f"{p}: a recipe must be a YAML mapping, got {type(recipe).__name__}")
    for ov in overrides:
        apply_override(recipe, ov)
    check_expansion(recipe, str(path) if path is not None else "the command-line overrides")
    if "student" in recipe:  # one place for the student's settings: the stage that trains it
        raise ConfigError(f"{path or 'the overrides'}: `student` is a train setting: move it under `train:` "
                          "(`train: {student: ...}`, or train.student=... on the command line)")
    unknown = [k for k in recipe if k not in TOP_LEVEL_KEYS]
    if unknown:
        raise ConfigError(_unknown_msg(unknown[0], TOP_LEVEL_KEYS, "recipe"))
    return recipe


MAX_RECIPE_VALUES = 100_000  # values of a recipe with its YAML aliases expanded (a "billion laughs" has 10^9)


def check_expansion(data: Any, where: str) -> None:
    """Refuse YAML aliases that expand past MAX_RECIPE_VALUES values, or that refer to themselves. PyYAML shares an
    aliased value, but the config hash (asdict, json) copies it at every use: an alias bomb under a free-form
    mapping (backend_options, extra_body) would hang a stage at growing memory. `&name`/`*name` reuse is fine."""
    sizes: dict[int, int] = {}  # id of a list/dict -> its values when expanded
    open_: set[int] = set()

    def size(x: Any) -> int:
        if not isinstance(x, (dict, list)):
            return 1
        if id(x) in sizes:
            return sizes[id(x)]
        if id(x) in open_:
            raise ConfigError(f"{where}: a YAML alias refers to a value that contains it (a recursive value); "
                              "write the value out")
        open_.add(id(x))
        n = 1 + sum(size(c) for c in ([*x, *x.values()] if isinstance(x, dict) else x))
        open_.discard(id(x))
        if n > MAX_RECIPE_VALUES:
            raise ConfigError(f"{where}: YAML aliases expand to more than {MAX_RECIPE_VALUES:,} values (an alias "
                              "bomb?): use fewer aliases (*name) or write the values out")
        sizes[id(x)] = n
        return n

    try:
        size(data)
    except RecursionError:
        raise ConfigError(f"{where}: values nested too deeply") from None


def apply_override(recipe: dict, override: str) -> None:
    """Apply one `a.b.c=value` override in place; the value is parsed as YAML."""
    if "=" not in override:
        raise ConfigError(f"Override {override!r} is not of the form key=value (e.g. train.epochs=2)")
    key, raw = override.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"Override {override!r} has an empty key part")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    node = recipe
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            # A string shorthand (e.g. `student: some/model`) becomes a mapping when a sub-key is set.
            child = {} if child is None else _expand_shorthand(part, child)
            node[part] = child
        node = child
    node[parts[-1]] = value


def _expand_shorthand(key: str, value: Any) -> dict:
    if key == "student" and isinstance(value, str):
        return {"name": value}
    raise ConfigError(f"Cannot set a sub-key of {key!r}: it is {value!r}, not a mapping")


def stage_config(recipe: dict, section: str, cls: type[T]) -> T:
    """Build the dataclass for one recipe section, filling shared keys the section leaves unset."""
    data = recipe.get(section) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"Section {section!r} must be a mapping, got {data!r}")
    data = dict(data)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in SHARED_KEYS:
        if key in names and key not in data and key in recipe:
            data[key] = recipe[key]
    return from_dict(cls, data, section)


def from_dict(cls: type[T], data: dict | None, where: str = "") -> T:
    """Build dataclass `cls` from a mapping; unknown keys and wrong types raise ConfigError."""
    if data is None:
        data = {}
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(_unknown_msg(key, list(fields), where or cls.__name__))
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}" if where else key)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from None


def _unknown_msg(key: str, known: list[str] | tuple[str, ...], where: str) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"Unknown key {key!r} in {where}.{hint} Known keys: {', '.join(sorted(known))}"


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} does not fit {tp}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, str) and hasattr(tp, "from_shorthand"):
            return tp.from_shorthand(value)
        return from_dict(tp, value, where)
    if origin is list or tp is list:
        if not isinstance(value, (list, tuple)):
            value = [value]
        inner = args[0] if args else Any
        return [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        if len(args) == 2 and dataclasses.is_dataclass(args[1]):  # e.g. dict[str, PromptConfig]
            return {str(k): _coerce(v, args[1], f"{where}.{k}") for k, v in value.items()}
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `3e-4` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def config_hash(cfg: Any, *extra: str, exclude: tuple[str, ...] = ("overwrite", "resume")) -> str:
    """The one hashing rule of stamps: a short stable hash of a stage config (minus the top-level settings in
    `exclude`, which do not change its outputs) and of `extra` (its inputs' fingerprints, the stages before it)."""
    return dict_hash(to_dict(cfg), *extra, exclude=exclude)


def dict_hash(d: dict, *extra: str, exclude: tuple[str, ...] = ()) -> str:
    """`config_hash` of a config already turned into a dict (or of any JSON-able mapping)."""
    d = {k: v for k, v in d.items() if k not in exclude}
    blob = json.dumps(d, sort_keys=True, default=str) + "|" + "|".join(extra)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def write_resolved(cfg: Any, out_dir: str | Path, section: str, name: str = layout.CONFIG) -> Path:
    """Write the resolved stage config beside the stage's outputs, as a recipe for that stage (`{section: ...}`):
    `r1distill SECTION that/config.yaml` runs it again."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    path.write_text(resolved_yaml(cfg, section))
    return path


def resolved_yaml(cfg: Any, section: str) -> str:
    head = f"# The {section} config as it ran; a recipe: r1distill {section} THIS_FILE [key=value ...]\n"
    data = to_dict(cfg)
    if data.get("overwrite"):
        data["overwrite"] = False  # running the recipe again must not delete what this run made
    return head + yaml.safe_dump({section: data}, sort_keys=False)


def read_resolved(path: str | Path, section: str) -> dict | None:
    """A stage's written config (`write_resolved`'s recipe `{section: ...}`); None when missing or unreadable."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return None
    if isinstance(data, dict) and isinstance(data.get(section), dict) and set(data) <= set(TOP_LEVEL_KEYS):
        return data[section]
    return None
