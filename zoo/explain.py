"""One forward pass, shown: how a prompt becomes ids, vectors, per-head queries, keys and
values, attention weights, a feed-forward or the router's choice, and a distribution over
the vocabulary, with this model's real shapes.

    python -m zoo.explain CONFIG_OR_RUN --prompt "The capital of France is" [--layer N] [--top-k K] [--json] [--plot DIR]
    python -m zoo.explain t5-base --prompt "translate English to German: Hello" --decoder-prompt-ids 0

CONFIG_OR_RUN is a run directory (its trained weights and tokenizer) or a config (a name in
configs/ or a TOML path: random weights, or shapes alone when they would not fit in memory;
without a tokenizer the prompt's UTF-8 bytes are its ids). Every shape printed is one the
forward pass made: the layers' taps (zoo.layers.taps) record the real intermediates. --plot
DIR writes the chosen layer's attention maps (one panel per head), its router's choice of
experts per token (an MoE layer), and a logit lens: the top token at each position read off
every layer's output through the final norm and the output head.

An encoder-decoder reads the prompt in its encoder and starts its decoder at the decoder start
token (model.bos_id), or at --decoder-prompt / --decoder-prompt-ids; the walk shows layer N of
each tower, the decoder's with its cross-attention to the encoder's output.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from zoo import config as zoo_config
from zoo import rundir, runs
from zoo.console import ArgumentParser, closable_output
from zoo.layers import taps
from zoo.models import Model, build
from zoo.models.wiring import layer_specs

MATERIALISE_LIMIT = 4 * 2**30  # bytes of random weights a bare config is given; beyond it the walk shows shapes alone


class ExplainError(ValueError):
    """A target, prompt or option zoo.explain cannot take; its message says what would do."""


@dataclasses.dataclass(frozen=True)
class Subject:
    """What is explained: the model, its params (None: shapes alone), tokenizer, BOS id, and what its weights are."""

    name: str
    model: Model
    params: nnx.State | None
    tokenizer: object | None
    bos: int | None
    weights: str


def load(target: str) -> Subject:
    """A run directory's trained model, or a config's with random weights (or none, when too large)."""
    path = Path(target)
    if (path / rundir.CONFIG).is_file():
        run = runs.load(path)
        bos = run.config.model.bos_id
        if bos is None and run.tokenizer is not None and run.tokenizer.bos_id >= 0:
            bos = run.tokenizer.bos_id
        return Subject(str(target), run.model, run.params, run.tokenizer, bos, f"trained (checkpoint {run.step})")
    if path.is_dir():
        raise ExplainError(f"{target} is a directory without a {rundir.CONFIG}: give a run directory or a config")
    try:
        cfg = zoo_config.load(target)
    except zoo_config.ConfigError as error:
        raise ExplainError(str(error)) from None
    model = build(cfg.model)
    tokenizer = None
    if cfg.data.tokenizer is not None:
        from zoo.tokenizer import Tokenizer

        try:
            tokenizer = Tokenizer.load(cfg.data.tokenizer)
        except (OSError, ValueError) as error:
            raise ExplainError(f"data.tokenizer: {error}") from None
    size = sum(math.prod(v.shape) * np.dtype(v.dtype).itemsize for v in jax.tree.leaves(model.abstract_params))
    if size > MATERIALISE_LIMIT:
        weights = f"none: random weights would take {size / 2**30:,.1f} GiB, so the walk shows shapes alone"
        return Subject(str(target), model, None, tokenizer, cfg.model.bos_id, weights)
    params = model.init(jax.random.key(0))
    return Subject(str(target), model, params, tokenizer, cfg.model.bos_id, "random (a bare config): the next tokens mean nothing")


def prompt_ids(subject: Subject, text: str | None, ids: str | None, flag: str = "--prompt") -> tuple[list[int], list[str], str]:
    """(ids, a label per id, how they were made) for `flag` text or `flag`-ids (--prompt, --decoder-prompt)."""
    vocab = subject.model.config.vocab_size
    if ids is not None:
        try:
            tokens = [int(part) for part in ids.split(",") if part.strip()]
        except ValueError:
            raise ExplainError(f"{flag}-ids must be comma-separated integers, got {ids!r}") from None
        how = "given as ids"
    elif subject.tokenizer is not None:
        tokens = [*([] if subject.bos is None else [subject.bos]), *subject.tokenizer.encode(text)]
        how = "the tokenizer's pieces" + (", after BOS" if subject.bos is not None else "")
    else:
        if vocab < 256:
            raise ExplainError(f"{subject.name} has no tokenizer and a vocabulary of {vocab} (< 256 bytes); give {flag}-ids")
        tokens = list(text.encode())
        how = "no tokenizer: the prompt's UTF-8 bytes as ids"
    if not tokens:
        raise ExplainError(f"the {flag[2:].replace('-', ' ')} is empty: give some text ({flag}) or ids ({flag}-ids)")
    bad = [i for i in tokens if not 0 <= i < vocab]
    if bad:
        raise ExplainError(f"token id {bad[0]} is outside the vocabulary of {vocab}")
    if len(tokens) > subject.model.config.max_seq_len:
        raise ExplainError(
            f"the {flag[2:].replace('-', ' ')} is {len(tokens)} tokens, more than the model's context of {subject.model.config.max_seq_len}"
        )
    labels = ["<bos>" if ids is None and index == 0 and token == subject.bos else _label(subject, token) for index, token in enumerate(tokens)]
    return tokens, labels, how


def decoder_start(subject: Subject, text: str | None, ids: str | None) -> tuple[list[int], list[str], str]:
    """An encoder-decoder's decoder input: --decoder-prompt(-ids), else the decoder start token alone."""
    if text is not None or ids is not None:
        return prompt_ids(subject, text, ids, "--decoder-prompt")
    if subject.bos is None:
        raise ExplainError(
            f"{subject.name} names no decoder start token (model.bos_id): give the decoder's input as --decoder-prompt-ids (T5 starts at 0)"
        )
    return [subject.bos], ["<start>"], "the decoder start token (model.bos_id)"


def record(subject: Subject, tokens: list[int], decoder_tokens: list[int] | None = None) -> list[taps.Tap]:
    """Every tap of one forward pass over `tokens` (batch 1; an encoder-decoder's encoder input,
    its decoder reading `decoder_tokens`): values, or shapes alone without params."""
    ids = jnp.asarray([tokens], jnp.int32)

    def forward(params, ids):
        if decoder_tokens is None:
            return subject.model.apply(params, ids).logits
        return subject.model.apply(params, jnp.asarray([decoder_tokens], jnp.int32), encoder_tokens=ids).logits

    with taps.recording(abstract=subject.params is None) as recorded:
        if subject.params is None:
            jax.eval_shape(forward, subject.model.abstract_params, ids)
        else:
            forward(subject.params, ids)
    return recorded


def _heads_text(heads: int, kv_heads: int) -> str:
    if kv_heads == heads:
        return "one per query head (multi-head attention)"
    if kv_heads == 1:
        return f"one shared by all {heads} query heads (multi-query attention)"
    return f"each shared by a group of {heads // kv_heads} query heads (grouped-query attention)"


def describe(
    name: str, shape: tuple[int, ...], model: zoo_config.ModelConfig, layer: int | None, spec, sizes: dict, tower: str | None = None
) -> str:
    """What the tensor tapped as `name` (of `shape`) is, in this model's terms; `spec` is the
    layer's LayerSpec (None outside the layers), `sizes` the same layer's other taps' shapes
    (queries' heads beside the keys'), `tower` an encoder-decoder's "encoder" or "decoder"."""
    d, vocab = model.d_model, model.vocab_size
    window = f", within a window of {spec.window}" if spec is not None and spec.window else ""
    window += f", within chunks of {spec.chunk}" if spec is not None and spec.chunk else ""
    causal = model.kind != "encoder" and tower != "encoder"
    seen = ("each query sees the keys at or before it" if causal else "each query sees every key") + window
    heads = sizes.get("attention.q", (0, 0, 0, 0))[2]
    attention = model.attention
    scale = f"{attention.softmax_scale:g}" if attention.softmax_scale else f"1/sqrt({sizes.get('attention.q', (0,) * 4)[3]})"
    capped = f", soft-capped to +-{attention.logit_softcap:g}" if attention.logit_softcap else ""
    biased = {"relative": ", plus the learned relative position bias", "alibi": ", plus ALiBi's distance penalty"}.get(model.position.kind, "")
    whose = {"encoder": "the encoder's ", "decoder": "the decoder's "}.get(tower, "")
    which = f"{tower} layer {layer}" if tower else f"layer {layer}"
    shared = "the shared expert: " if "router.logits" in sizes else ""
    latent = " decompressed from the latent" if "attention.latent" in sizes else ""
    position = model.position
    rotated = f"RoPE (theta {position.rope_theta:g}" + (f", {position.rope_scaling} scaling" if position.rope_scaling not in (None, "none") else "")
    rotated += f", {position.rotary_fraction:.0%} of each head's dims)" if position.rotary_fraction != 1 else ")"
    texts = {
        "embedding": (f"{whose}input: " if tower else "") + f"each id's row of the [{vocab}, {d}] embedding table"
        + (f", times sqrt({d})" if model.embedding_scale else "")
        + (f", plus the {position.kind} position embedding" if position.kind in ("learned", "sinusoidal") else "")
        + (", normed" if model.embedding_norm else ""),
        "block.input": f"the residual stream entering {which}: one {d}-vector per token",
        "attention.input": "what attention reads: the stream" + ("" if model.block == "post_norm" else f" after the layer's {model.norm} norm"),
        "attention.q": f"queries: {shape[2]} heads of {shape[3]}" if len(shape) == 4 else "queries",
        "attention.k": (f"keys{latent}: {shape[2]} key/value heads of {shape[3]}, {_heads_text(heads, shape[2])}" if len(shape) == 4 and heads else "keys"),
        "attention.v": f"values{latent}: {shape[2]} heads of {shape[3]}" if len(shape) == 4 else "values",
        "attention.q_rotated": f"queries after {rotated}: their dot products with keys now depend on the distance between positions",
        "attention.k_rotated": f"keys after {rotated}",
        "attention.latent": f"the compressed key/value latent of rank {shape[-1]}, one per token: what the cache keeps (latent attention)",
        "attention.rope_key": f"the rotated key of {shape[-1]} dims shared by every head, cached beside the latent",
        "attention.scores": f"query . key x {scale} per query head{biased}{capped}: [{shape[2]} queries, {shape[3]} keys]" if len(shape) == 4 else "scores",
        "attention.weights": f"softmax of the scores over the keys each query may see ({seen})"
        + (", and a learned sink per head that takes a share and gives no value" if attention.sinks else "; each row sums to 1"),
        "attention.values": "the weights times the values: each head's mix of what it attends to",
        "attention.output": f"the heads side by side through the output projection, back to d_model {d}",
        "cross_attention.input": "what cross-attention reads: the stream" + ("" if model.block == "post_norm" else f" after its {model.norm} norm"),
        "cross_attention.q": f"queries from the decoder's tokens: {shape[2]} heads of {shape[3]}" if len(shape) == 4 else "queries",
        "cross_attention.k": f"keys of the encoder's output, computed once per prompt and cached: {shape[2]} heads of {shape[3]}"
        if len(shape) == 4 else "keys of the encoder's output",
        "cross_attention.v": f"values of the encoder's output: {shape[2]} heads of {shape[3]}" if len(shape) == 4 else "values",
        "cross_attention.scores": f"query . key x {scale} per query head{capped}, no positions: [{shape[2]} decoder queries, {shape[3]} encoder tokens]"
        if len(shape) == 4 else "scores",
        "cross_attention.weights": "softmax of the scores over every encoder token (no causal mask); each row sums to 1",
        "cross_attention.values": "the weights times the encoder's values: each head's mix of the prompt",
        "cross_attention.output": f"the heads through cross-attention's output projection, back to d_model {d}",
        "ffn.hidden": shared + (f"{model.ffn_activation}(x W_gate) * (x W_up)" if model.ffn_gated else f"{model.ffn_activation}(x W_up)")
        + (f": expanded from {d} to {shape[-1]}" if shape else ""),
        "ffn.output": shared + f"contracted back to d_model {d} by W_down",
        "router.logits": f"the router's score of each of {shape[-1]} experts for each token" if shape else "router scores",
        "router.experts": f"the {shape[-1]} experts each token is sent to" if shape else "chosen experts",
        "router.weights": "each chosen expert's weight in the token's sum",
        "moe.output": "the chosen experts' outputs, weighted and summed (with any shared expert's)",
        "mamba2.x": "Mamba-2's input to the scan, per head",
        "mamba2.B": "its input projection B per token (what is written to the state)",
        "mamba2.C": "its output projection C per token (what is read from the state)",
        "mamba2.dt": "its step size per token and head (how fast the state forgets)",
        "mamba2.scan": "the selective scan's output: each token's read of a state carried along the sequence",
        "deltanet.q": "Gated DeltaNet's queries", "deltanet.k": "its keys", "deltanet.v": "its values",
        "deltanet.beta": "its write strength per token and head",
        "deltanet.log_decay": "its forgetting per token and head (log of the gate)",
        "deltanet.rule": "the gated delta rule's output: each query read from a state updated token by token",
        "mixer.output": f"the mixer's output projected back to d_model {d}",
        "block.output": "the stream leaving the layer: its input plus what each sublayer added",
        "final_norm": f"the final {model.norm} norm of the encoder's last layer: the memory each decoder layer's cross-attention reads"
        if tower == "encoder" else f"the final {model.norm} norm of the last layer's output",
        "logits": f"a score for each of the {vocab} tokens of the vocabulary at each position",
    }
    return texts.get(name, "")


@dataclasses.dataclass(frozen=True)
class Step:
    """One line of the walk: the layer (None outside them), the tap's name, its shape and dtype,
    what it is, and its tower (an encoder-decoder's "encoder" or "decoder", else None)."""

    layer: int | None
    name: str
    shape: tuple[int, ...]
    dtype: str
    what: str
    tower: str | None = None


def depths(config: zoo_config.ModelConfig) -> dict[str | None, int]:
    """Each tower's number of layers, by the name its taps carry."""
    if config.kind == "encoder_decoder":
        return {"encoder": config.encoder_layers or config.num_layers, "decoder": config.num_layers}
    return {None: config.num_layers}


def walk(subject: Subject, recorded: list[taps.Tap], layer: int) -> list[Step]:
    """The taps outside the layers and those of `layer` (in each tower), in the order the forward pass made them."""
    config = subject.model.config
    specs = {tower: layer_specs(config, depth)[layer] for tower, depth in depths(config).items()}
    sizes = {tower: {t.name: tuple(t.value.shape) for t in recorded if (t.tower, t.layer) == (tower, layer)} for tower in specs}
    return [
        Step(t.layer, t.name, tuple(t.value.shape), str(t.value.dtype),
             describe(t.name, tuple(t.value.shape), config, t.layer, None if t.layer is None else specs[t.tower],
                      sizes.get(t.tower, {}), t.tower), t.tower)
        for t in recorded
        if t.layer in (None, layer)
    ]


def _label(subject: Subject, token: int) -> str:
    """A token's text (its byte without a tokenizer, or its id where that is not printable)."""
    if subject.tokenizer is not None:
        return subject.tokenizer.decode([token])
    return chr(token) if 32 <= token < 127 else str(token)


def _drawn(text: str) -> str:
    """A token's text as a plot's label: white space written out (a newline as \\n, spaces as _)."""
    text = text.replace("\n", "\\n").replace("\t", "\\t")
    return text.strip() or "_" * max(len(text), 1)


def top_tokens(subject: Subject, logits: jax.Array, k: int) -> list[dict]:
    """The k likeliest tokens of logits [V]: {id, text, probability}."""
    probabilities = jax.nn.softmax(jnp.asarray(logits, jnp.float32))
    best = np.argsort(-np.asarray(probabilities))[:k]
    return [{"id": int(i), "text": _label(subject, int(i)), "probability": float(probabilities[i])} for i in best]


def logit_lens(subject: Subject, recorded: list[taps.Tap]) -> tuple[np.ndarray, np.ndarray]:
    """(top token ids [L, T], their probabilities [L, T]): each layer's output read through the
    final norm and the output head, as if the layers after it were not there (an encoder-decoder's
    decoder layers)."""
    module = subject.model.bind(subject.params)
    tower = module.decoder if subject.model.config.kind == "encoder_decoder" else module.tower
    final_norm = getattr(tower, "final_norm", None)
    ids, probabilities = [], []
    for t in recorded:
        if t.name == "block.output" and t.tower != "encoder":
            hidden = t.value if final_norm is None else final_norm(t.value)
            p = jax.nn.softmax(module.logits(hidden)[0].astype(jnp.float32), axis=-1)
            ids.append(np.asarray(jnp.argmax(p, -1)))
            probabilities.append(np.asarray(jnp.max(p, -1)))
    return np.stack(ids), np.stack(probabilities)


def plot(subject: Subject, recorded: list[taps.Tap], layer: int, labels: dict[str | None, list[str]], directory: Path) -> list[str]:
    """Writes the PNGs of --plot into `directory`; returns their paths. `labels`: each tower's
    tokens (None: a model of one tower; an encoder-decoder's "encoder" and "decoder")."""
    from zoo.train.plot import Panel, heatmap

    labels = {tower: [_drawn(label) for label in texts] for tower, texts in labels.items()}
    written = []
    for tower, rows in labels.items():
        of_layer = {t.name: np.asarray(t.value) for t in recorded if (t.tower, t.layer) == (tower, layer)}
        named = f"{tower} layer {layer}" if tower else f"layer {layer}"
        maps = [("attention", "attention", rows), ("cross_attention", "cross-attention", labels.get("encoder"))]
        for tap, title, columns in maps:
            if f"{tap}.weights" in of_layer:
                weights = of_layer[f"{tap}.weights"][0]  # [H, T, S]
                panels = [Panel(f"head {h}", weights[h]) for h in range(weights.shape[0])]
                path = directory / f"{tower + '-' if tower else ''}{title}-layer{layer}.png"
                heatmap(path, panels, title=f"{named} {title} weights", row_labels=rows, column_labels=columns[: weights.shape[-1]])
                written.append(str(path))
        if "router.experts" in of_layer:
            experts, chosen = of_layer["router.experts"], of_layer["router.weights"]  # [T, k] for batch 1
            table = np.zeros((len(rows), of_layer["router.logits"].shape[-1]))
            np.put_along_axis(table, experts, chosen, axis=1)
            path = directory / f"{tower + '-' if tower else ''}router-layer{layer}.png"
            heatmap(
                path, [Panel("weight given each expert", table, high=max(float(table.max()), 1e-9))], title=f"{named} router choices",
                row_labels=rows, column_labels=[str(e) for e in range(table.shape[1])],
            )
            written.append(str(path))
    ids, probabilities = logit_lens(subject, recorded)
    texts = [[_drawn(_label(subject, int(i))) for i in row] for row in ids]
    path = directory / "logit-lens.png"
    heatmap(
        path, [Panel("top token and its probability", probabilities, texts)], title="logit lens",
        row_labels=[f"layer {n}" for n in range(len(ids))], column_labels=labels.get("decoder", labels.get(None)),
    )
    written.append(str(path))
    return written


def explain(target: str, *, prompt: str | None = None, prompt_ids_text: str | None = None, layer: int = 0, top_k: int = 5,
            plot_dir: str | None = None, decoder_prompt: str | None = None, decoder_prompt_ids: str | None = None) -> dict:
    """The walk as data: {model, kind, layers, encoder_layers, weights, tokens, decoder_tokens,
    layer, steps, next, plots} (see the module; the decoder_ and encoder_ keys None but for an
    encoder-decoder)."""
    subject = load(target)
    config = subject.model.config
    two_towers = config.kind == "encoder_decoder"
    if not two_towers and (decoder_prompt is not None or decoder_prompt_ids is not None):
        raise ExplainError(f"--decoder-prompt is for encoder_decoder models; {target} is a {config.kind} model")
    deepest = min(depths(config).values())
    if not 0 <= layer < deepest:
        raise ExplainError(f"--layer {layer}: {target} has layers 0..{deepest - 1}" + (" in each tower" if two_towers else ""))
    if not 1 <= top_k <= config.vocab_size:
        raise ExplainError(f"--top-k must be in 1..{config.vocab_size} (the vocabulary), got {top_k}")
    if plot_dir is not None and subject.params is None:
        raise ExplainError(f"--plot needs values, and {target} is walked by shapes alone ({subject.weights})")
    if plot_dir is not None:
        try:
            Path(plot_dir).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ExplainError(f"--plot {plot_dir}: cannot make that directory ({error.strerror})") from None
    tokens, labels, how = prompt_ids(subject, prompt, prompt_ids_text)
    decoder = decoder_start(subject, decoder_prompt, decoder_prompt_ids) if two_towers else None
    recorded = record(subject, tokens, None if decoder is None else decoder[0])
    logits = next(t.value for t in reversed(recorded) if t.name == "logits")
    listed = lambda ids, texts: [{"id": i, "text": label} for i, label in zip(ids, texts)]
    return {
        "model": target, "kind": config.kind, "layers": config.num_layers,
        "encoder_layers": depths(config)["encoder"] if two_towers else None, "weights": subject.weights,
        "tokens": listed(tokens, labels), "tokenized": how,
        "decoder_tokens": None if decoder is None else listed(*decoder[:2]), "decoder_tokenized": None if decoder is None else decoder[2],
        "layer": layer,
        "steps": [{**dataclasses.asdict(step), "shape": list(step.shape)} for step in walk(subject, recorded, layer)],
        "next": None if subject.params is None else top_tokens(subject, logits[0, -1], top_k),
        "plots": [] if plot_dir is None else plot(
            subject, recorded, layer, {"encoder": labels, "decoder": decoder[1]} if two_towers else {None: labels}, Path(plot_dir)
        ),
    }


def _shape(shape) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


def show(result: dict) -> None:
    """Prints the walk for a reader."""
    two_towers = result["encoder_layers"] is not None
    depth = f"{result['encoder_layers']} encoder + {result['layers']} decoder" if two_towers else str(result["layers"])
    print(f"{result['model']}: {result['kind']}, {depth} layers; weights {result['weights']}")
    inputs = [("prompt, the encoder's input" if two_towers else "prompt", result["tokens"], result["tokenized"])]
    if two_towers:
        inputs.append(("the decoder's input", result["decoder_tokens"], result["decoder_tokenized"]))
    for title, tokens, how in inputs:
        print(f"{title}: {len(tokens)} token{'s' * (len(tokens) != 1)} ({how})")
        print("  ids    " + " ".join(str(t["id"]) for t in tokens))
        print("  texts  " + " ".join(repr(t["text"]) for t in tokens))
    width = max(len(_shape(s["shape"])) for s in result["steps"])
    names = max(len(s["name"]) + 2 * (s["layer"] is not None) for s in result["steps"]) + 1
    depths = {"encoder": result["encoder_layers"], "decoder": result["layers"], None: result["layers"]}
    heading = (None, None)
    for step in result["steps"]:
        tower, layer = step["tower"], step["layer"]
        if (tower, layer) != heading:
            if tower != heading[0]:
                print(f"\n{tower}" if tower else "")
            elif layer is None:
                print()
            if layer is not None:
                print(f"\n{tower + ' ' if tower else ''}layer {layer} of {depths[tower]}")
            heading = (tower, layer)
        indent = "  " if layer is not None else ""
        print(f"{indent}{step['name']:<{names - len(indent)}} {_shape(step['shape']):<{width}} {step['dtype']:<9} {step['what']}")
    if result["next"] is not None:
        where = {"decoder": "next token", "encoder_decoder": "the decoder's next token"}.get(result["kind"], "the last position's token")
        print(f"\n{where}, top {len(result['next'])}:")
        for entry in result["next"]:
            print(f"  {entry['probability']:7.2%}  {entry['text']!r} (id {entry['id']})")
    for path in result["plots"]:
        print(f"wrote {path}")


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m zoo.explain", description="One forward pass shown step by step, with this model's real shapes.")
    parser.add_argument("target", metavar="CONFIG_OR_RUN", help="a run directory, a config name in configs/ or a TOML path")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", metavar="TEXT", help="the prompt text")
    source.add_argument("--prompt-ids", metavar="IDS", help="the prompt as token ids, e.g. 1,2,3")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--decoder-prompt", metavar="TEXT", help="an encoder_decoder's decoder input (default: its start token)")
    start.add_argument("--decoder-prompt-ids", metavar="IDS", help="the same as token ids, e.g. 0 (T5's start token)")
    parser.add_argument("--layer", type=int, default=0, metavar="N", help="the layer to show inside (default 0, the first)")
    parser.add_argument("--top-k", type=int, default=5, metavar="K", help="how many next tokens to list (default 5)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--plot", metavar="DIR", help="write attention maps, router choices and a logit lens as PNGs into DIR")
    args = parser.parse_args(argv)
    try:
        result = explain(
            args.target, prompt=args.prompt, prompt_ids_text=args.prompt_ids, layer=args.layer, top_k=args.top_k, plot_dir=args.plot,
            decoder_prompt=args.decoder_prompt, decoder_prompt_ids=args.decoder_prompt_ids,
        )
    except (ExplainError, runs.RunError) as error:
        parser.error(str(error))
    with closable_output():
        if args.json:
            print(json.dumps(result))
        else:
            show(result)


if __name__ == "__main__":
    main()
