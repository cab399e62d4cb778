"""Architecture surgery, measured (issue 21): the default tiny model trained with multi-head
attention (8 key/value heads), then converted by zoo.convert and uptrained for 5% of its
steps: GQA with 4, 2 and 1 key/value heads (each group's mean, and its first head), MLA at
two latent ranks (factorised from the weights, and calibrated on 4,096 held-out tokens' attention
inputs), and MoE upcycling (4 experts, top-2). For each: the eval perplexity on the
run's held-out rows right after the conversion and after uptraining (the base too is uptrained
the same way, to tell the restart's own effect from the conversion's), and the KV-cache bytes
per token (zoo.stats); a table, and a PNG of perplexity against KV bytes.

    python bench/surgery.py [--workdir runs/surgery] [--steps 300] [--small]

Runs are kept in --workdir: a second call reuses what is there (the base run is resumed, or
left as it is when done).
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

from zoo import config, stats
from zoo.convert import convert_run
from zoo.eval import evaluate
from zoo.models import build
from zoo.train import train
from zoo.train.plot import SERIES_COLOURS, Series, chart

from common import show

VARIANTS = {  # name: (--to, options)
    "gqa-4-mean": ("gqa", {"kv_heads": 4, "init": "mean"}), "gqa-4-first": ("gqa", {"kv_heads": 4, "init": "first"}),
    "gqa-2-mean": ("gqa", {"kv_heads": 2, "init": "mean"}), "gqa-2-first": ("gqa", {"kv_heads": 2, "init": "first"}),
    "gqa-1-mean": ("gqa", {"kv_heads": 1, "init": "mean"}), "gqa-1-first": ("gqa", {"kv_heads": 1, "init": "first"}),
    "mla-128": ("mla", {"kv_rank": 128}), "mla-64": ("mla", {"kv_rank": 64}),
    "mla-128-calibrated": ("mla", {"kv_rank": 128, "calibrate": 4096}), "mla-64-calibrated": ("mla", {"kv_rank": 64, "calibrate": 4096}),
    "moe-4x2": ("moe", {"experts": 4, "top_k": 2}),
}
SMALL = ["model.num_layers=2", "model.d_model=128", "model.ffn_dim=256", "model.vocab_size=512", "train.batch_size=8", "train.seq_len=64"]


def kv_bytes(run_dir: Path) -> float:
    return stats.kv_cache_bytes_per_token(build(config.load(run_dir / "config.toml").model))


def family(name: str) -> str:
    """The plot's series for a row: base, gqa mean, gqa first, mla, mla calibrated, moe."""
    if name.startswith("gqa"):
        return "gqa " + name.rsplit("-", 1)[1]
    if name.startswith("mla"):
        return "mla calibrated" if name.endswith("calibrated") else "mla"
    return name.split(" ")[0].split("-")[0]


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--workdir", default="runs/surgery", help="where the runs go (default runs/surgery)")
    cli.add_argument("--steps", type=int, default=300, help="the base run's steps (uptraining takes 5%% of them)")
    cli.add_argument("--small", action="store_true", help="a 2-layer model and 20 base steps: a smoke test of the script")
    args = cli.parse_args()
    root = Path(args.workdir)
    steps = 20 if args.small else args.steps
    base_config = config.load("tiny", ["model.num_kv_heads=8", f"train.steps={steps}", *(SMALL if args.small else [])])
    quiet = io.StringIO()
    train(base_config, root / "base", out=quiet)
    uptrain_steps = max(steps // 20, 1)
    rows = {}
    for name, (to, options) in {"base (MHA, 8 KV heads)": (None, {}), **VARIANTS}.items():
        converted = root / "base" if to is None else root / name  # the base uptrained too: the restart's own effect
        uptrained = root / ("base-up" if to is None else f"{name}-up")
        if not (converted / "config.toml").is_file():
            convert_run(root / "base", converted, to, **options)
        cfg = config.override(config.load(converted / "config.toml"), {
            "train.init_from": str(converted), "train.steps": uptrain_steps, "train.warmup_steps": 0,
            "train.learning_rate": 1e-3, "train.eval_every": uptrain_steps, "train.checkpoint_every": uptrain_steps,
            "train.log_every": uptrain_steps,
        })
        train(cfg, uptrained, out=quiet)
        rows[name] = {"after": evaluate(converted)["perplexity"], "up": evaluate(uptrained)["perplexity"], "kv": kv_bytes(converted)}
    (root / "surgery.json").write_text(json.dumps(rows, indent=2))
    show(
        f"architecture surgery on the tiny model ({steps} base steps, {uptrain_steps} uptraining steps): eval perplexity",
        {name: f"after conversion {r['after']:9.3f} | after uptraining {'-' if r['up'] is None else format(r['up'], '9.3f'):>9} | "
               f"KV cache {r['kv']:7,.0f} bytes/token" for name, r in rows.items()},
    )
    series = []
    for index, name in enumerate(dict.fromkeys(map(family, rows))):
        members = [r for row, r in rows.items() if family(row) == name]
        series.append(Series(name, [r["kv"] for r in members], [r["up"] or r["after"] for r in members], SERIES_COLOURS[index], joined=False))
    figure = chart(root / "surgery.png", series, xlabel="kv bytes per token", ylabel="perplexity", title="tiny model surgery, uptrained")
    print(f"\nwrote {root / 'surgery.png'} and {root / 'surgery.json'} ({len(figure.legend)} points)")


if __name__ == "__main__":
    main()
