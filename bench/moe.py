"""Training throughput of a Mixtral-shaped MoE in zoo (issue 9): 8 experts, top-2, d_model 2048,
16 layers (see shapes.MIXTRAL), one step of forward, backward and AdamW on 8 x 2048 tokens,
bf16 compute with float32 params, dropless dispatch.

MFU counts only the parameters a token uses (its two routed experts, zoo.stats.matmul_params).
GPU target: MFU >= 45% on active parameters. With --reference, the same step in transformers
(MixtralForCausalLM, eager or --compile) and zoo's ratio to it.

    python bench/moe.py [--small] [--reference [--compile]] [--kernel chunked] [--remat full]
"""

import shapes
import training

if __name__ == "__main__":
    training.main(__doc__, shapes.mixtral, "Mixtral-shaped MoE, MFU on active parameters", ">= 45% on GPU")
