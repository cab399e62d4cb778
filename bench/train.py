"""Training throughput of a TinyLlama-1.1B-shaped model in zoo (issue 9): one step of forward,
backward and AdamW on 8 x 2048 tokens, bf16 compute with float32 params and scanned layers.

Prints tokens/s, MFU against the device's dense bf16 peak, and the first step's compile
time. GPU targets: MFU >= 60%, compile < 60 s. With --reference, the same step in
transformers (LlamaForCausalLM, eager or --compile) and zoo's ratio to it.

    python bench/train.py [--small] [--reference [--compile]] [--kernel chunked] [--remat full]
"""

import shapes
import training

if __name__ == "__main__":
    training.main(__doc__, shapes.tinyllama, "TinyLlama-1.1B shape", ">= 60% on GPU", "; target < 60 s on GPU")
