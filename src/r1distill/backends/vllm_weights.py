"""The vLLM worker extension that takes new weights: on-policy training's vLLM rollout engine holds a copy of the
student, and the trainer pushes its current weights into it every `train.on_policy.rollout_sync_steps` steps
(`r1distill.train.rollouts`).

vLLM mixes this class into its worker class (`vllm.LLM(worker_extension_cls=...)`), so the method runs inside the
engine's worker process and is called by name through `LLM.collective_rpc`. The weights themselves go through a
safetensors file (in /dev/shm where there is one: memory, not disk) whose path is the call's argument: vLLM's RPC
carries control messages (a tensor argument reaches the worker as its msgpack header, a list, not a tensor), and a
file needs neither a pickled callable nor VLLM_ALLOW_INSECURE_SERIALIZATION. This module imports nothing heavy: the
worker imports it by its qualified name.
"""

from __future__ import annotations

QUALNAME = "r1distill.backends.vllm_weights.WeightLoader"


class WeightLoader:
    def r1distill_load_weights(self, path: str) -> int:
        """Load the (Hugging Face parameter name -> tensor) safetensors file at `path` into the engine's model; the
        number of tensors read. vLLM's own `reload_weights` does it: the model's `load_weights` maps the names onto
        vLLM's fused layers (q/k/v into qkv_proj, gate/up into gate_up_proj), and the layerwise reload redoes what
        the engine did to the weights after its first load (the CPU build repacks linear layers, leaving the
        checkpoint-shaped parameters empty, so a plain `load_weights` fails there). A layer the file does not
        cover keeps its weights; a fused layer must come whole (train/rollouts.py sends whole layers).

        A head tied to the input embeddings loads nothing of its own, so the reload leaves it as it was; but on a CPU
        its processing made a packed copy of the embedding for the logits' matmul, which would stay the old one
        (measured: the rollouts' log-probs off by up to 2 nats). So the tied head is processed again.

        vLLM warns "<Layer>: Failed to load weights" for every layer a reload leaves as it was: the tied head, the
        rotary embedding, and with a push in several files every layer of the other files. Those are expected
        here, so that warning is dropped while this call runs (the test compares the engine's log-probs instead)."""
        import logging

        from safetensors.torch import load_file

        weights = load_file(path)
        log = logging.getLogger("vllm.model_executor.model_loader.reload.layerwise")
        log.addFilter(_expected_misses)
        try:
            self.reload_weights(weights_iterator=iter(weights.items()), is_checkpoint_format=True)
        finally:
            log.removeFilter(_expected_misses)
        model = self.model_runner.get_model()
        head = getattr(model, "lm_head", None)
        if head is not None and getattr(self.model_config.hf_config, "tie_word_embeddings", False):
            head.quant_method.process_weights_after_loading(head)
        return len(weights)


def _expected_misses(record) -> bool:
    """A logging filter: False (drop) for layerwise reload's "<Layer>: Failed to load weights" (see above)."""
    return record.msg != "%s: Failed to load weights"
