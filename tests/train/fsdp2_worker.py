"""One rank of a real FSDP2 run on CPU (gloo), started by torchrun from tests/train/test_train_fsdp2.py.

Accelerate runs FSDP only on accelerators (on CPU it falls back to DDP), so this drives our training pieces
under torch's own `fully_shard` directly: the token rows (train/data.py), the collator, the patched forward
with the chunked head (train/head.py, which must gather an untied head's DTensor shards) and the loss, with
every decoder layer and the root sharded as Accelerate's TRANSFORMER_BASED_WRAP does. Each rank takes its half
of every global batch; the loss is normalised by the global token count and scaled by the world size, as
DistillTrainer does, because FSDP averages gradients over ranks.

    torchrun --nproc_per_node N tests/train/fsdp2_worker.py STUDENT CURATED OUT.json [--lora ADAPTER_DIR]

Writes the per-step global losses (rank 0). With --lora: a LoRA adapter on the sharded model, one step, the
full state dict gathered to rank 0 and saved as a PEFT adapter, then merged by skeleton.merge_lora.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from r1distill.models import load_tokenizer
from r1distill.train import TrainConfig
from r1distill.train.collate import DistillCollator
from r1distill.train.config import LossConfig
from r1distill.train.data import TokenData, prepare_tokens
from r1distill.train.head import add_distill_head

STEPS, GLOBAL_BATCH = 3, 4


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("student")
    ap.add_argument("curated")
    ap.add_argument("out")
    ap.add_argument("--lora")
    args = ap.parse_args()
    faulthandler.enable()  # a rank that aborts prints every thread's Python stack, so CI shows where
    distributed = "WORLD_SIZE" in os.environ
    if distributed:
        dist.init_process_group("gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    torch.manual_seed(0)
    from transformers import AutoModelForCausalLM

    tok = load_tokenizer(args.student)
    cfg = TrainConfig(input_dir=args.curated, cache_dir=str(Path(args.out).with_suffix(".cache")))
    rows = TokenData(prepare_tokens(cfg, tok, need_topk=True, retok=False), max_length=64)
    collate = DistillCollator(tok.pad_token_id, rows)
    loss_cfg = LossConfig(alpha=0.5, chunk_size=16)
    model = AutoModelForCausalLM.from_pretrained(args.student, dtype=torch.float32)
    assert not model.config.tie_word_embeddings, "the test wants an untied head"
    if args.lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False))  # B != 0: the merge must matter
    add_distill_head(model, loss_cfg, len(tok))
    if distributed:
        from torch.distributed.fsdp import fully_shard

        base = model.get_base_model() if args.lora else model
        for layer in base.model.layers:
            fully_shard(layer)
        fully_shard(model)
        head = base.get_output_embeddings().weight
        assert isinstance(head, torch.distributed.tensor.DTensor) and head.to_local().shape[0] < head.shape[0]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for step in range(1 if args.lora else STEPS):
        idx = list(range(step * GLOBAL_BATCH, (step + 1) * GLOBAL_BATCH))
        num_items = (collate([{"idx": i} for i in idx])["labels"][:, 1:] != -100).sum()  # the global count
        mine = idx[rank * GLOBAL_BATCH // world:(rank + 1) * GLOBAL_BATCH // world]
        batch = collate([{"idx": i} for i in mine])
        parts = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      distill={"labels": batch["labels"], "topk_ids": batch["topk_ids"],
                               "topk_logprobs": batch["topk_logprobs"], "num_items": num_items})
        (parts["loss"] * world).backward()  # FSDP averages gradients over ranks
        opt.step()
        opt.zero_grad()
        total = parts["loss"].detach().clone()
        if distributed:
            dist.all_reduce(total)
        losses.append(float(total))
    if args.lora:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)) \
            if distributed else model.state_dict()
        if rank == 0:
            from peft import get_peft_model_state_dict

            adapter = get_peft_model_state_dict(model, state_dict=full)
            model.save_pretrained(args.lora, state_dict=adapter)
    if rank == 0:
        Path(args.out).write_text(json.dumps({"losses": losses, "world": world}))
    if distributed:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
    # Skip interpreter teardown: FSDP2's modules and hooks keep the gloo process group referenced past
    # destroy_process_group. A rank aborted once in CI with "terminate called without an active exception" (0 in
    # 60 runs here), the signature of gloo threads destroyed un-joined at teardown (pytorch#65231).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
