"""On-policy training's rollout engines (`train.on_policy.rollout_backend`): where the student's samples come from.

  hf    the project's hf sampler (shared prompt prefix, fast top-p) on the student being trained, in this process:
        no copy, the weights always current, nothing to start.
  vllm  a vLLM engine (its own process, as the vllm backend runs it) started on the student's dir and holding a copy
        of the student, into which the trainer pushes its current weights every `rollout_sync_steps` optimizer steps
        (the first rollout of a session syncs too: a resumed run's weights are not the start's). The push writes
        them to a safetensors file in memory (/dev/shm) and calls our worker extension (`backends.vllm_weights`)
        through `LLM.collective_rpc` with its path; the worker reloads them with vLLM's layerwise `reload_weights`.
        Then the prefix cache is reset (its KV entries are the old weights'). Every weight is sent, frozen ones
        too, whole decoder layers per file (vLLM fuses q/k/v and gate/up, and a fused parameter reloads whole);
        with LoRA the adapters are merged for the push. TRL's `DistillationTrainer` syncs its colocated engine
        the same way (merge, rename, load), but inside the trainer process with an in-process engine, which on a
        CPU samples at half the hf sampler's speed (BENCHMARKS.md); an engine in its own process keeps vLLM's speed.
        One training process only (a colocated engine per rank is not built).

Both return `Completion`s with the sampled tokens' raw log-probs (the token form's advantage reads them).
"""

from __future__ import annotations

import time

import torch

from r1distill.backends import Completion, SamplingConfig
from r1distill.config import UserError

SYNC_CHUNK_BYTES = 256 << 20  # weights per file and call (whole layers): about the push's extra memory
GPU_MEMORY_SHARE = 0.3  # vllm rollouts on a GPU: its share of the GPU when unset (vLLM's 0.9 leaves none to train)


class HFRollouts:
    """Samples from the live student with `HFBackend.from_model` (module docstring)."""

    name = "hf"

    def __init__(self, accelerator, tokenizer):
        self.accelerator, self.tokenizer = accelerator, tokenizer

    def stale(self, step: int) -> bool:
        return False

    def sync(self, model, step: int) -> None:
        pass

    def sample(self, model, prompts: list[list[int]], sampling: SamplingConfig, seeds: list[int]) -> list[Completion]:
        from r1distill.backends.hf import HFBackend

        student = self.accelerator.unwrap_model(model)
        was_training = student.training
        student.eval()
        try:
            with self.accelerator.autocast():
                return HFBackend.from_model(student, self.tokenizer, batch_size=len(prompts)).generate_ids(
                    prompts, sampling, seeds)
        finally:
            student.train(was_training)

    def close(self) -> None:
        pass


def student_weights(model) -> list[tuple[str, torch.Tensor]]:
    """Every weight of the student under the names of its Hugging Face checkpoint, sorted by name: its parameters,
    or for a PEFT model (call inside `merge_adapter`) the merged base weights and the `modules_to_save` copies.
    All of them, frozen ones too: vLLM fuses q/k/v and gate/up into one parameter each, which a reload must get
    whole."""
    from peft import PeftModel

    out = {}
    for name, p in model.named_parameters():
        if isinstance(model, PeftModel):
            if ".lora_" in name or ".original_module." in name:
                continue
            name = name.removeprefix("base_model.model.").replace(".base_layer", "")
            name = name.replace(".modules_to_save.default", "")
        out[name] = p.detach()
    return sorted(out.items())


def layer_chunks(weights: list[tuple[str, torch.Tensor]], limit: int) -> list[list[tuple[str, torch.Tensor]]]:
    """`weights` cut into runs of about `limit` bytes, only between decoder layers (`...layers.N`) or other
    modules: what vLLM fuses (q/k/v, gate/up) lives in one layer, so every fused parameter is loaded whole."""
    import re

    def unit(name: str) -> str:
        m = re.match(r"(.*\.layers\.\d+)\.", name)
        return m.group(1) if m else name.rsplit(".", 1)[0]

    chunks: list[list] = []
    size, last = 0, None
    for name, t in weights:
        if not chunks or (size >= limit and unit(name) != last):
            chunks.append([])
            size = 0
        chunks[-1].append((name, t))
        size += t.numel() * t.element_size()
        last = unit(name)
    return chunks


class VLLMRollouts:
    """A vLLM engine holding a copy of the student, its weights pushed from the trainer (module docstring)."""

    name = "vllm"

    def __init__(self, student_path: str, options: dict, dtype: str, sync_steps: int, processes: int):
        from r1distill.backends.vllm import VLLMBackend
        from r1distill.backends.vllm_engine import on_cpu
        from r1distill.backends.vllm_weights import QUALNAME

        if processes > 1:
            raise UserError(f"train.on_policy.rollout_backend=vllm runs one engine beside one training process; "
                            f"this run has {processes} (accelerate launch): use rollout_backend=hf there")
        options = dict(options)
        if not on_cpu():
            options.setdefault("gpu_memory_utilization", GPU_MEMORY_SHARE)
        self.backend = VLLMBackend(student_path, options, dtype=dtype,
                                   engine_extra={"worker_extension_cls": QUALNAME})
        self.dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(
            str(self.backend.llm.model_config.dtype).removeprefix("torch."), torch.float32)
        self.sync_steps = sync_steps
        self.synced: int | None = None  # the optimizer step whose weights the engine holds (None: not synced yet)

    def stale(self, step: int) -> bool:
        """Whether step `step`'s rollouts need the trainer's weights first."""
        return self.synced is None or step - self.synced >= self.sync_steps

    @torch.no_grad()
    def sync(self, model, step: int) -> None:
        """Push the student's current weights into the engine, a file of whole layers at a time."""
        from peft import PeftModel

        peft = isinstance(model, PeftModel)
        if peft:
            model.merge_adapter()
        try:  # (merged until the files are written: an fp32 weight is not copied on its way to the file)
            for chunk in layer_chunks(student_weights(model), SYNC_CHUNK_BYTES):
                chunk = [(n, t.to(device="cpu", dtype=self.dtype).contiguous()) for n, t in chunk]
                if (read := self._load(chunk)) != [len(chunk)] * len(read):
                    raise RuntimeError(f"the vLLM rollout engine's workers read {read} of {len(chunk)} weights")
        finally:
            if peft:
                model.unmerge_adapter()
        self.backend.llm.reset_prefix_cache()  # cached prompt KV was computed with the old weights
        self.synced = step

    def _load(self, chunk: list[tuple[str, torch.Tensor]]) -> list[int]:
        """One file of weights into the engine (backends/vllm_weights.py); the tensors each worker read (with
        tensor parallelism every worker reads the whole file and loads its shard)."""
        import os
        import tempfile

        from safetensors.torch import save_file

        shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        fd, path = tempfile.mkstemp(prefix="r1distill-weights-", suffix=".safetensors", dir=shm)
        os.close(fd)
        try:
            save_file(dict(chunk), path)
            return list(self.backend.llm.collective_rpc("r1distill_load_weights", args=(path,)))
        finally:
            os.unlink(path)

    def sample(self, model, prompts: list[list[int]], sampling: SamplingConfig, seeds: list[int]) -> list[Completion]:
        return self.backend.generate_ids(prompts, sampling, seeds)

    def close(self) -> None:
        self.backend.close()


def start(op, accelerator, tokenizer, student_path: str, dtype: str):
    """The rollout engine `train.on_policy.rollout_backend` names."""
    if op.rollout_backend == "hf":
        return HFRollouts(accelerator, tokenizer)
    t0 = time.perf_counter()
    engine = VLLMRollouts(student_path, op.rollout_backend_options, dtype, op.rollout_sync_steps,
                          accelerator.num_processes)
    from r1distill.console import console

    console.print(f"[bold]train[/] on_policy: vLLM rollout engine started on {student_path} in "
                  f"{time.perf_counter() - t0:.0f} s; weights pushed every {op.rollout_sync_steps} step(s)")
    return engine
