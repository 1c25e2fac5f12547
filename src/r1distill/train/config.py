"""The train stage's settings: one dataclass per concern, as TRL pairs a config with each trainer.

`TrainConfig` is the recipe's `train:` section. `LossConfig` (`train.loss`) holds the distillation loss's
settings under the names `losses.chunked_distill_loss` takes, so they reach it unrenamed; `LoraOptions` and
`GKDOptions` are the `train.lora` and `train.gkd` sections, `XtokOptions` the `train.xtok` section (cross-tokenizer
KD: set it for a student whose tokenizer is not the teacher's).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from r1distill.config import LAYOUT, ConfigError
from r1distill.models import StudentConfig

OBJECTIVES = ("sft", "kd", "kd_online", "gkd", "on_policy")
ON_POLICY_LOSSES = ("token", "distribution")
DIVERGENCES = ("forward_kl", "reverse_kl", "jsd", "tvd")
TOPK_MODES = ("renorm", "tail")
XTOK_METHODS = ("uld", "gold", "alm")
XTOK_MERGES = ("first", "last")
EXACT_TOKENS = ("all", "runs", "prefix_closed")
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class LossConfig:
    """`train.loss`: α·CE + (1−α)·τ²·D(teacher ‖ student), computed `chunk_size` tokens at a time. The field
    names are `chunked_distill_loss`'s keywords (see losses.py for the math)."""

    alpha: float = 0.5  # weight of cross-entropy; (1 - alpha) weighs the KD term (sft uses 1)
    temperature: float = 1.0  # τ; the KD term is scaled by τ²
    divergence: str = "forward_kl"  # D for kd/kd_online: forward_kl | reverse_kl | jsd | tvd
    beta: float = 0.5  # jsd's β (0 = forward KL, 1 = reverse KL)
    topk_mode: str = "renorm"  # kd: renorm over the stored top-k, or tail (a k+1-th bucket for the rest)
    topk: int | None = None  # kd: use only the teacher's first k stored entries (null: all of them)
    chunk_size: int = 1024  # tokens per LM-head chunk inside the loss; 0 = the model's full logits

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"train.loss.alpha must be in [0, 1] (the CE weight), got {self.alpha}")
        if self.temperature <= 0:
            raise ConfigError(f"train.loss.temperature must be > 0, got {self.temperature}")
        if self.divergence not in DIVERGENCES:
            raise ConfigError(f"train.loss.divergence must be one of {', '.join(DIVERGENCES)}, "
                              f"got {self.divergence!r}")
        if not 0.0 <= self.beta <= 1.0:
            raise ConfigError(f"train.loss.beta must be in [0, 1], got {self.beta}")
        if self.topk_mode not in TOPK_MODES:
            raise ConfigError(f"train.loss.topk_mode must be renorm or tail, got {self.topk_mode!r}")
        if self.topk is not None and self.topk < 1:
            raise ConfigError(f"train.loss.topk must be >= 1 (or null for every stored entry), got {self.topk}")
        if self.chunk_size < 0:
            raise ConfigError(f"train.loss.chunk_size must be >= 0 (0 = unchunked), got {self.chunk_size}")

    def loss_kwargs(self) -> dict:
        """The keywords of `distill_loss`/`chunked_distill_loss` (chunk_size and topk are applied elsewhere)."""
        return {k: v for k, v in asdict(self).items() if k not in ("chunk_size", "topk")}


@dataclass
class XtokOptions:
    """`train.xtok`: KD between tokenizers (train/xtok/align.py aligns, train/xtok/loss.py holds the math). The
    completion's bytes are cut into groups where both sides' tokens end on the same byte; per group:
      uld   the L1 distance between the sorted teacher and student distributions (ULD's Wasserstein-1), a
            multi-token group's distribution merged from one position's times the probabilities of the tokens
            actually emitted at the others (GOLD); the teacher's stored top-k plus a tail bucket;
      gold  uld on the tokens the two vocabularies do not share, plus a divergence (train.loss.divergence, beta)
            on the shared ones (identical bytes), at the group's first position on both sides;
      alm   ALM's chunk term alone: a Bernoulli KL between the two sides' likelihoods of the group's text.
    The loss is α·CE + (1−α)·KD as for one tokenizer (train.loss.alpha, chunk_size; temperature must be 1)."""

    method: str = "gold"  # uld | gold | alm (above)
    merge: str = "first"  # a multi-token group's base distribution: its first position's, or its last's (uld only)
    exact_tokens: str = "runs"  # gold: shared tokens in the exact term: all | runs (not digit/space runs that the
    #                             other vocabulary extends: the multi-digit numeral risk) | prefix_closed (none that
    #                             a token of only one vocabulary extends)
    exact_weight: float = 1.0  # gold: weight of the exact-token divergence
    alm_weight: float = 0.0  # uld / gold: + this x the ALM chunk term (method alm: the term alone, weight 1)
    alm_temperature: float = 1.0  # ALM's binarisation temperature
    online_topk: int = 64  # kd_online: the teacher's entries per token kept from its full distribution (0: all)

    def __post_init__(self) -> None:
        for name, allowed in (("method", XTOK_METHODS), ("merge", XTOK_MERGES), ("exact_tokens", EXACT_TOKENS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"train.xtok.{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.method == "gold" and self.merge != "first":
            raise ConfigError("train.xtok.merge: last works with method uld only (gold's exact-token term compares "
                              "the two sides where their tokens start on the same byte: a group's first positions)")
        if self.method == "alm" and self.alm_weight:
            raise ConfigError("train.xtok.alm_weight adds the ALM term to uld or gold; method alm is that term alone")
        if self.exact_weight < 0 or self.alm_weight < 0:
            raise ConfigError("train.xtok.exact_weight and alm_weight must be >= 0")
        if self.alm_temperature <= 0:
            raise ConfigError(f"train.xtok.alm_temperature must be > 0, got {self.alm_temperature}")
        if self.online_topk < 0:
            raise ConfigError(f"train.xtok.online_topk must be >= 0 (0: the whole vocabulary), got {self.online_topk}")


@dataclass
class LoraOptions:
    enabled: bool = False  # train a LoRA adapter instead of all weights (merged into the saved student)
    r: int = 16  # the adapter's rank
    alpha: int = 32  # LoRA scaling is alpha / r
    dropout: float = 0.0  # dropout on the adapter's input
    target_modules: list[str] = field(default_factory=lambda: list(LORA_TARGETS))  # the linear layers that get adapters

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ConfigError(f"train.lora.r must be >= 1, got {self.r}")
        if not self.target_modules:
            raise ConfigError("train.lora.target_modules is empty: name the linear layers to adapt (e.g. q_proj)")


@dataclass
class GKDOptions:
    lmbda: float = 0.5  # share of batches whose completions the student samples (on-policy)
    beta: float = 0.5  # generalized JSD interpolation: 0 = forward KL, 1 = reverse KL
    seq_kd: bool = False  # off-policy batches: the teacher samples new completions (sequence-level KD)
    max_new_tokens: int = 128  # length of the sampled completions (student or teacher)
    temperature: float = 0.9  # sampling temperature (the loss itself is at τ = 1)

    def __post_init__(self) -> None:
        for name in ("lmbda", "beta"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"train.gkd.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.max_new_tokens < 1:
            raise ConfigError("train.gkd.max_new_tokens must be >= 1")
        if self.temperature <= 0:
            raise ConfigError("train.gkd.temperature must be > 0 (GKD samples; there is no greedy mode)")


@dataclass
class OnPolicyOptions:
    """`train.on_policy` (objective on_policy, train/on_policy.py): each on-policy step the student samples one
    completion per prompt of the batch from its own prompt (`prompt`), the teacher scores those tokens after its
    own prompt (`teacher_prompt`, with the examples the student never sees), and the student learns the per-token
    reverse KL KL(student ‖ teacher) on them."""

    # token: the sampled-token form (Thinking Machines' on-policy distillation): each sampled token's CE weighted
    #        by its advantage log p_teacher − log p_student (no gradient through it), a policy gradient of the
    #        reverse KL per token; needs only the teacher's log-prob of each sampled token (any scoring server)
    # distribution: train.loss.divergence (reverse_kl, or jsd with train.loss.beta) between the student's and the
    #        teacher's next-token distributions at each sampled position, over the teacher's first `teacher_topk`
    #        entries (train.loss.topk_mode: tail keeps the rest as one bucket, and is exact where they agree)
    loss: str = "token"
    # share of the steps that are on-policy; the others train on the curated traces as objective kd does (α·CE +
    # (1−α)·D on the stored top-k, train.loss): GKD's λ. 1 = every step samples.
    lmbda: float = 1.0
    max_new_tokens: int = 64  # the student's sampled completion length
    temperature: float = 1.0  # sampling temperature; 1 samples the distribution the reverse KL is taken over
    top_p: float = 1.0  # nucleus sampling of the rollouts (1 = off: the estimator assumes the model's own samples)
    teacher_topk: int = 20  # distribution: the teacher's entries per sampled position
    # the teacher that scores: hf (loaded in this process, beside the student), vllm (an engine of its own), or
    # openai (a vLLM / OpenAI-compatible server's prompt log-probs: the teacher stays out of training memory)
    teacher_backend: str = "hf"
    teacher_backend_options: dict = field(default_factory=dict)  # the teacher backend's options (base_urls, ...)
    # train only on the rollouts whose answer the verifier accepts against the gold answer (rejection sampling
    # inside on-policy distillation); the others are sampled, scored and logged (rkl, accuracy), not trained on
    verified_only: bool = False
    # token form: add reward_coef·(r − r̄) to every sampled token's advantage, r = 1 when the verifier accepts the
    # rollout's answer (else 0) and r̄ a baseline: the mean over the prompt's own rollouts_per_prompt samples (GRPO's
    # group baseline), or with one sample per prompt the micro-batch's mean. A REINFORCE term on the verifier's
    # reward beside the distillation. 0: pure distillation
    reward_coef: float = 0.0
    # samples per prompt each on-policy step: a micro-batch trains on batch_size × this many rollouts
    rollouts_per_prompt: int = 1
    # where the rollouts come from: hf (the student being trained, in this process: always current, nothing to
    # start) or vllm (an engine in its own process holding a copy of the student, its weights pushed from the
    # trainer every rollout_sync_steps steps; one training process only). train/rollouts.py, BENCHMARKS.md
    rollout_backend: str = "hf"
    rollout_backend_options: dict = field(default_factory=dict)  # vllm: the vllm backend's options (kv_cache_gib, ...)
    # vllm: push the student's weights to the engine every this many optimizer steps (1: every step, each rollout
    # from the current student; more: rollouts from a student up to N-1 steps old, cheaper syncs)
    rollout_sync_steps: int = 1

    def __post_init__(self) -> None:
        if self.loss not in ON_POLICY_LOSSES:
            raise ConfigError(f"train.on_policy.loss must be one of {', '.join(ON_POLICY_LOSSES)}, got {self.loss!r}")
        if not 0.0 <= self.lmbda <= 1.0:
            raise ConfigError(f"train.on_policy.lmbda must be in [0, 1], got {self.lmbda}")
        if self.max_new_tokens < 1 or self.teacher_topk < 1:
            raise ConfigError("train.on_policy.max_new_tokens and teacher_topk must be >= 1")
        if self.temperature <= 0 or not 0.0 < self.top_p <= 1.0:
            raise ConfigError("train.on_policy.temperature must be > 0 (rollouts sample) and top_p in (0, 1]")
        if self.teacher_backend not in ("hf", "vllm", "openai"):
            raise ConfigError(f"train.on_policy.teacher_backend must be hf, vllm or openai, "
                              f"got {self.teacher_backend!r}")
        if self.rollouts_per_prompt < 1:
            raise ConfigError(f"train.on_policy.rollouts_per_prompt must be >= 1, got {self.rollouts_per_prompt}")
        if self.reward_coef < 0:
            raise ConfigError(f"train.on_policy.reward_coef must be >= 0, got {self.reward_coef}")
        if self.reward_coef and self.loss != "token":
            raise ConfigError("train.on_policy.reward_coef adds to the token form's per-token advantage: set "
                              "train.on_policy.loss=token")
        if self.rollout_backend not in ("hf", "vllm"):
            raise ConfigError(f"train.on_policy.rollout_backend must be hf or vllm, got {self.rollout_backend!r}")
        if self.rollout_backend == "hf" and self.rollout_backend_options:
            raise ConfigError("train.on_policy.rollout_backend_options are the vllm rollout engine's: set "
                              "rollout_backend=vllm, or leave them out")
        if self.rollout_sync_steps < 1:
            raise ConfigError(f"train.on_policy.rollout_sync_steps must be >= 1, got {self.rollout_sync_steps}")
        from r1distill.backends import check_options

        try:  # the backends' options checked now, before any model loads
            check_options(self.teacher_backend, self.teacher_backend_options)
        except ConfigError as e:
            raise ConfigError(f"train.on_policy.teacher_backend_options: {e}") from None
        if self.rollout_backend == "vllm":
            try:
                rollout_opts = check_options("vllm", self.rollout_backend_options)
            except ConfigError as e:
                raise ConfigError(f"train.on_policy.rollout_backend_options: {e}") from None
            if rollout_opts.data_parallel_size > 1:  # the engine takes pushed weights: one engine, not replicas
                raise ConfigError("train.on_policy.rollout_backend_options.data_parallel_size must be 1: the rollout "
                                  "engine is one vLLM engine")


@dataclass
class TrainConfig:
    run_dir: str = "runs/default"  # the run's directory: each stage's default input and output dirs are under it
    teacher: str = "smollm2-135m-instruct"  # `student.derive_from: teacher` and kd_online's teacher model
    # the student: a model name (`student: NAME`), or one derived from the teacher (keys below)
    student: StudentConfig = field(default_factory=lambda: StudentConfig(derive_from="teacher", num_layers=8))
    input_dir: str | None = None  # default: {run_dir}/curated
    output_dir: str | None = None  # default: {run_dir}/student
    objective: str = "kd"  # sft | kd | kd_online | gkd | on_policy (train.on_policy)
    loss: LossConfig = field(default_factory=LossConfig)  # kd / kd_online: the loss (sft: CE only)
    # kd / kd_online with a student of another tokenizer (null: one tokenizer, refused when they differ)
    xtok: XtokOptions | None = None
    epochs: float = 2.0  # passes over the curated traces (a fraction is allowed)
    learning_rate: float = 1e-4  # the peak learning rate (AdamW)
    batch_size: int = 8  # per device
    grad_accum: int = 1  # batches accumulated per optimizer step
    max_length: int = 1024  # prompt + completion tokens; longer rows are cut
    # share of the steps that warm the lr up (passed as transformers' warmup_steps, read as a ratio below 1)
    warmup_ratio: float = 0.05
    lr_scheduler: str = "cosine"  # transformers' lr_scheduler_type: cosine | linear | constant | ...
    weight_decay: float = 0.0  # AdamW's decoupled weight decay
    bf16: bool | None = None  # None: bf16 autocast on a GPU that supports it and on a CPU with native bf16
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, more compute
    # train only the decoder layers from this index up: the input embeddings and layers [0, N) stay as they are
    # and no gradient flows below layer N (the backward skips them; a tied LM head still trains). 0 = all.
    freeze_layers: int = 0
    lora: LoraOptions = field(default_factory=LoraOptions)  # LoRA (PEFT) instead of full fine-tuning
    teacher_device: str = "auto"  # kd_online: where the teacher runs (auto = the student's device; cpu, cuda:1…)
    logging_steps: int = 1  # log (train_log.jsonl, the progress bar, report_to) every N optimizer steps
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])  # or [] / none, wandb, …
    save_steps: int = 0  # checkpoint every N optimizer steps to {output}.work; 0 = no checkpoints
    save_total_limit: int | None = 2  # checkpoints kept (the oldest are deleted); None = all
    resume: bool = False  # continue from the latest complete checkpoint (`r1distill train --resume`)
    gkd: GKDOptions = field(default_factory=GKDOptions)  # objective gkd only
    on_policy: OnPolicyOptions = field(default_factory=OnPolicyOptions)  # objective on_policy
    # SFT: re-tokenize the completion text with the student's tokenizer (true), train on the stored ids (false),
    # or decide by comparing the teacher's tokenizer with the student's (null)
    retokenize: bool | None = None
    allow_processed_logprobs: bool = False  # kd on "processed" top-k log-probs without the warning
    # where a derived student is saved before training; default {run_dir}/student_init (see run.init_dir)
    init_dir: str | None = None
    cache_dir: str | None = None  # the token cache (memory-mapped Arrow); default: ~/.cache/r1distill/tokens
    seed: int = 0  # the seed of the data order and of any random init
    # delete this stage's earlier outputs (after the input is checked) instead of resuming or moving aside
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"train.objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if self.freeze_layers < 0:
            raise ConfigError("train.freeze_layers must be >= 0 (0 trains every layer)")
        if self.freeze_layers and self.lora.enabled:
            raise ConfigError("train.freeze_layers goes with full fine-tuning; with train.lora choose the layers "
                              "by train.lora.target_modules")
        if self.save_steps < 0 or self.logging_steps < 1:
            raise ConfigError("train.save_steps must be >= 0 and train.logging_steps >= 1")
        if self.save_total_limit is not None and self.save_total_limit < 1:
            raise ConfigError("train.save_total_limit must be >= 1 (or null to keep every checkpoint)")
        if self.max_length < 2:
            raise ConfigError(f"train.max_length must be >= 2 tokens, got {self.max_length}")
        if self.objective == "on_policy" and self.on_policy.loss == "token" and self.loss.temperature != 1.0:
            raise ConfigError("train.loss.temperature must be 1 with on_policy's token loss (it weighs raw log-probs)")
        if self.xtok is not None and self.objective not in ("kd", "kd_online"):
            raise ConfigError(f"train.xtok (cross-tokenizer KD) applies to kd and kd_online, not {self.objective}; "
                              "remove it (sft re-tokenizes the text for another tokenizer by itself)")
        if self.xtok is not None and self.loss.temperature != 1.0:
            raise ConfigError("train.loss.temperature must be 1 with train.xtok: the cross-tokenizer terms compare "
                              "probabilities as the teacher gave them")

    @property
    def inp(self) -> Path:
        return Path(self.input_dir or Path(self.run_dir) / LAYOUT["curated"])

    @property
    def out(self) -> Path:
        return Path(self.output_dir or Path(self.run_dir) / LAYOUT["student"])

    @property
    def init_out(self) -> Path:
        return Path(self.init_dir or Path(self.run_dir) / LAYOUT["student_init"])

    @property
    def work(self) -> Path:
        """Checkpoints and the trainer's scratch files; removed after a successful run."""
        return self.out.with_name(self.out.name + ".work")

    @property
    def kd(self) -> bool:
        """Whether a KD term is trained (kd/kd_online with alpha < 1)."""
        return self.objective in ("kd", "kd_online") and self.loss.alpha < 1.0
