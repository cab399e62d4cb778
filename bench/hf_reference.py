"""The benchmarks' workloads through Hugging Face transformers on PyTorch, for a side-by-side ratio.

Models are built from the zoo config (through `zoo.hf.config_to_hf`: LlamaForCausalLM,
MixtralForCausalLM) with random weights; nothing is downloaded. Runs on CUDA when
PyTorch has it, else on the CPU. Importing this module fails without torch and transformers.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
import transformers

from zoo.config import ModelConfig
from zoo.hf import config_to_hf

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def describe() -> str:
    name = torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu"
    return f"transformers {transformers.__version__}, torch {torch.__version__} on {name}"


def wait(_=None) -> None:
    """Returns once queued GPU work is done (CPU work is synchronous)."""
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def model(config: ModelConfig, dtype: torch.dtype) -> transformers.PreTrainedModel:
    """The transformers model of a zoo config, random weights of `dtype`, on DEVICE."""
    hf_config = transformers.AutoConfig.for_model(**config_to_hf(config)[1])
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(hf_config, dtype=dtype).to(DEVICE)


def train_step(net: transformers.PreTrainedModel, tokens: np.ndarray, *, compile: bool) -> Callable[[], torch.Tensor]:
    """One step on rows tokens [B, L + 1]: bf16 autocast forward over the first L, cross-entropy on
    the last L, backward, global-norm clipping to 1 and AdamW (b2 0.95), as zoo's step does."""
    rows = torch.from_numpy(np.asarray(tokens)).long().to(DEVICE)
    inputs, targets = rows[:, :-1], rows[:, 1:]
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=DEVICE == "cuda")
    forward = torch.compile(net) if compile else net
    net.train()

    def step() -> torch.Tensor:
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            logits = forward(input_ids=inputs).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def generate(net: transformers.PreTrainedModel, prompts: np.ndarray, new_tokens: int) -> Callable[[], torch.Tensor]:
    """Greedy `generate` of exactly `new_tokens` after prompts [B, P] (EOS suppressed until then)."""
    inputs = torch.from_numpy(np.asarray(prompts)).long().to(DEVICE)
    mask = torch.ones_like(inputs)
    net.eval()

    @torch.no_grad()
    def run() -> torch.Tensor:
        return net.generate(
            inputs, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
            pad_token_id=0,
        )

    return run


def attention(shape: dict, *, backward: bool) -> Callable[[], object]:
    """PyTorch's scaled_dot_product_attention (what transformers' "sdpa" attention calls), causal,
    bf16, q [B, H, T, Dh] and k, v [B, K, T, Dh]; with `backward`, also the gradients of q, k, v."""
    b, t, h, kv, d = (shape[name] for name in ("batch", "length", "heads", "kv_heads", "head_dim"))
    generator = torch.Generator(DEVICE).manual_seed(0)

    def normal(*shape):
        return torch.randn(*shape, dtype=torch.bfloat16, device=DEVICE, generator=generator, requires_grad=backward)

    q, k, v = normal(b, h, t, d), normal(b, kv, t, d), normal(b, kv, t, d)

    def run():
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        if not backward:
            return out
        return torch.autograd.grad(out.float().sum(), (q, k, v))

    return run
