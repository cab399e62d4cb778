"""Training pieces against their formulas: data rows, sources, loss, optimizer, step."""

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sentencepiece import sentencepiece_model_pb2

from zoo import config, models
from zoo.native_stderr import lines_of_native_stderr
from zoo.tokenizer import BOS, EOS, Tokenizer
from zoo.train.corpus import stdlib_documents
from zoo.layers.attention.mask import segment_positions
from zoo.train.data import TokenRows, batches, document_stream
from zoo.train.loss import loss_sums, split_row, token_losses
from zoo.train.optimizer import decay_mask, learning_rate, optimizer
from zoo.train.phase import Phase, duration
from zoo.train.report import Pace
from zoo.train.sources import DataError, read_documents, read_token_stream
from zoo.train.step import init_state, train_step


def test_rows_separate_documents():
    stream = document_stream([[5, 6, 7], [8, 9], [10, 11, 12, 13, 14, 15, 16]])  # 18 tokens
    rows = TokenRows(stream, 6)
    got = [rows[i] for i in range(len(rows))]
    E, B = EOS, BOS
    np.testing.assert_array_equal([r["tokens"] for r in got], [[B, 5, 6, 7, E, B], [8, 9, E, B, 10, 11], [12, 13, 14, 15, 16, E]])
    np.testing.assert_array_equal([r["segment_ids"] for r in got], [[1, 1, 1, 1, 1, 2], [1, 1, 1, 2, 2, 2], [1] * 6])
    segments = jnp.asarray([r["segment_ids"] for r in got])
    np.testing.assert_array_equal(segment_positions(segments), [[0, 1, 2, 3, 4, 0], [0, 1, 2, 0, 1, 2], range(6)])
    assert len(TokenRows(stream[:17], 6)) == 2  # a partial last row is dropped
    one_document = TokenRows(np.arange(12), 6, document_end_id=None)[1]
    np.testing.assert_array_equal(one_document["segment_ids"], np.ones(6))


def test_held_out_rows_are_a_seeded_random_sample():
    rows = TokenRows(np.arange(400), 4, document_end_id=None)  # 100 rows; row r starts at token 4r
    first = lambda part: [part[i]["tokens"][0] // 4 for i in range(len(part))]
    train_rows, held_out = rows.split(10, seed=0)
    assert len(train_rows) == 90 and len(held_out) == 10
    assert sorted(first(train_rows) + first(held_out)) == list(range(100))  # every row in exactly one part
    assert first(held_out) == sorted(first(held_out)) and first(held_out) != list(range(90, 100))  # not the tail
    assert first(rows.split(10, seed=0)[1]) == first(held_out) != first(rows.split(10, seed=1)[1])


def test_targets_never_cross_documents():
    row = TokenRows(document_stream([[5, 6], [7, 8, 9]]), 9)[0]
    inputs, targets, weights = split_row({k: jnp.asarray(v)[None] for k, v in row.items()})
    np.testing.assert_array_equal(inputs["tokens"], [[BOS, 5, 6, EOS, BOS, 7, 8, 9]])
    np.testing.assert_array_equal(weights, [[1, 1, 1, 0, 1, 1, 1, 1]])  # EOS -> next BOS is not a target


def test_processes_share_the_same_global_batches():
    rows = TokenRows(np.arange(64), 4, document_end_id=None)  # 16 rows
    whole = batches(rows, 8, seed=0)
    halves = [batches(rows, 8, seed=0, shard_index=i, shard_count=2) for i in range(2)]
    seen = []
    for _ in range(5):  # past the end of the first epoch
        expected = next(whole)["tokens"]
        np.testing.assert_array_equal(np.concatenate([next(h)["tokens"] for h in halves]), expected)
        seen.append(expected[:, 0] // 4)
    assert sorted(np.concatenate(seen[:2])) == list(range(16))  # an epoch visits every row once
    assert not np.array_equal(np.concatenate(seen[:2]), np.concatenate(seen[2:4]))  # and is reshuffled
    with pytest.raises(ValueError, match="the data has 16 rows of 4 tokens, fewer than one batch of 32"):
        batches(rows, 32, seed=0)


def test_token_losses_formula():
    rng = np.random.default_rng(0)
    logits, targets = rng.normal(size=(2, 3, 5)), rng.integers(0, 5, size=(2, 3))
    log_z = np.log(np.exp(logits).sum(-1))
    nll, z = token_losses(jnp.asarray(logits, jnp.float32), jnp.asarray(targets))
    np.testing.assert_allclose(nll, log_z - np.take_along_axis(logits, targets[..., None], -1)[..., 0], rtol=1e-5)
    np.testing.assert_allclose(z, log_z, rtol=1e-5)


@pytest.mark.parametrize("chunk_tokens", [1, 6, 10, 1000])
def test_chunked_loss_equals_whole_and_keeps_gradients(chunk_tokens):
    rng = np.random.default_rng(0)
    hidden = jnp.asarray(rng.normal(size=(2, 7, 4)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(4, 11)), jnp.float32)
    targets = jnp.asarray(rng.integers(0, 11, size=(2, 7)))
    weights = jnp.asarray(rng.integers(0, 2, size=(2, 7)))

    def whole(w):
        nll, log_z = token_losses(hidden @ w, targets)
        return jnp.sum(nll * weights) + 0.1 * jnp.sum(log_z**2 * weights)

    def chunked(w):
        sums = loss_sums(lambda h: h @ w, hidden, targets, weights, chunk_tokens=chunk_tokens)
        return sums["nll"] + 0.1 * sums["z"]

    np.testing.assert_allclose(chunked(w), whole(w), rtol=1e-5)
    np.testing.assert_allclose(jax.grad(chunked)(w), jax.grad(whole)(w), rtol=1e-4, atol=1e-5)


def test_weight_decay_skips_norms_and_biases(small_config):
    model = models.build(small_config(attention={"qkv_bias": True}))
    flat = jax.tree_util.tree_flatten_with_path(decay_mask(model.abstract_params))[0]
    named = {"/".join(str(getattr(k, "key", k)) for k in path): v for path, v in flat}
    assert not any(v for k, v in named.items() if "scale" in k or "bias" in k)
    assert all(v for k, v in named.items() if k.endswith("weight/value") or "table" in k)


@pytest.mark.parametrize("decay, middle", [("cosine", 0.55), ("linear", 0.55)])
def test_learning_rate_warms_up_then_decays(decay, middle):
    schedule = learning_rate(config.TrainConfig(steps=110, warmup_steps=10, learning_rate=1.0, decay=decay))
    assert float(schedule(0)) == 0.0 and float(schedule(5)) == pytest.approx(0.5)
    assert float(schedule(10)) == pytest.approx(1.0) and float(schedule(60)) == pytest.approx(middle)
    assert float(schedule(110)) == pytest.approx(0.1)


def test_grad_accumulation_gives_the_same_update(small_config):
    model = models.build(small_config(num_layers=1))
    rows = TokenRows(document_stream([list(range(4, 90))] * 4 + [list(range(10, 40))] * 3), 17)
    batch = {k: jnp.asarray(np.stack([rows[i][k] for i in range(8)])) for k in ("tokens", "segment_ids")}
    tx = optax.sgd(1.0)  # the update is the gradient itself
    state = jax.jit(init_state, static_argnums=(0, 1))(model, tx, jax.random.key(0))
    results = []
    for accumulation in (1, 2, 4):
        run = config.TrainConfig(batch_size=8, grad_accumulation=accumulation, loss_chunk=8)
        results.append(jax.jit(train_step(model, tx, run))(state, batch))
    for new_state, metrics in results[1:]:
        np.testing.assert_allclose(metrics["loss"], results[0][1]["loss"], rtol=1e-5)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), new_state.params, results[0][0].params)


def test_z_loss_is_reported_and_pulls_log_z_down(small_config):
    model = models.build(small_config())
    rows = TokenRows(document_stream([list(range(4, 90))] * 2), 17)
    batch = {k: jnp.asarray(np.stack([rows[i][k] for i in range(4)])) for k in ("tokens", "segment_ids")}
    tx = optax.sgd(1.0)
    state = jax.jit(init_state, static_argnums=(0, 1))(model, tx, jax.random.key(0))
    plain = jax.jit(train_step(model, tx, config.TrainConfig(z_loss=0.0)))(state, batch)
    with_z = jax.jit(train_step(model, tx, config.TrainConfig(z_loss=1.0)))(state, batch)
    np.testing.assert_allclose(plain[1]["loss"], with_z[1]["loss"], rtol=1e-6)  # the reported loss is the nll
    assert float(with_z[1]["z_loss"]) > 0
    measure = jax.jit(train_step(model, tx, config.TrainConfig(z_loss=0.0)))
    assert float(measure(with_z[0], batch)[1]["z_loss"]) < float(measure(plain[0], batch)[1]["z_loss"])


def test_moe_step_adds_router_losses_and_moves_the_balancing_bias_outside_the_gradient(small_config):
    moe = dict(num_experts=4, top_k=2, expert_ffn_dim=16, router="sigmoid", bias_update_rate=0.1, load_balance_coef=0.5)
    model = models.build(small_config(moe=moe))
    rows = TokenRows(document_stream([list(range(4, 90))] * 2), 17)
    batch = {k: jnp.asarray(np.stack([rows[i][k] for i in range(4)])) for k in ("tokens", "segment_ids")}
    run = config.TrainConfig(weight_decay=0.5, learning_rate=1e-2, warmup_steps=0)
    tx = optimizer(run)
    state = jax.jit(init_state, static_argnums=(0, 1))(model, tx, jax.random.key(0))
    new_state, metrics = jax.jit(train_step(model, tx, run))(state, batch)

    inputs, _, _ = split_row(batch)
    features = model.bind(state.params).features(inputs["tokens"], segment_ids=inputs["segment_ids"])
    (layers,) = features.moe  # one scanned block: arrays stacked over its 2 layers
    load = np.asarray(layers.load)  # [2, 4]
    expected_bias = 0.1 * np.sign(load.mean(-1, keepdims=True) - load)  # from zero; weight decay leaves it alone
    np.testing.assert_allclose(new_state.params["tower"]["layers"]["ffn"]["router"]["bias"][...], expected_bias, atol=1e-7)
    np.testing.assert_allclose(metrics["expert_load"], load.sum(0) / load.sum(), rtol=1e-6)
    # one balancing loss over both layers' tokens together: 4 * sum_e f_e P_e, sum_e f_e = top_k
    f, p = (np.asarray(getattr(layers, name)).sum(0) / np.sum(layers.routed_tokens) for name in ("assigned", "router_probs"))
    assert f.sum() == pytest.approx(2.0)
    np.testing.assert_allclose(metrics["moe_balance_loss"], 4 * np.sum(f * p), rtol=1e-5)
    np.testing.assert_allclose(metrics["moe_z_loss"], np.sum(layers.z_loss), rtol=1e-5)
    assert float(metrics["drop_fraction"]) == 0.0  # dropless

    unweighted = models.build(small_config(moe=moe | {"load_balance_coef": 0.0}))
    other, _ = jax.jit(train_step(unweighted, tx, run))(state, batch)
    router = lambda s: s.params["tower"]["layers"]["ffn"]["router"]["weight"][...]
    assert not np.allclose(router(other), router(new_state))  # the balancing loss is in the objective


def test_tokenizer_round_trips_source_code():
    documents = stdlib_documents()[:50]
    tokenizer = Tokenizer.train(documents, vocab_size=400)
    assert tokenizer.vocab_size == 400 and (tokenizer.bos_id, tokenizer.eos_id) == (BOS, EOS)
    for text in documents[:5] + ["\tmixed \n\n  whitespace\u00e9\u4e2d "]:
        assert tokenizer.decode(tokenizer.encode(text)) == text
    with pytest.raises(ValueError, match="cannot train a 100-piece tokenizer on this text: its characters and the special tokens alone take "):
        Tokenizer.train(documents, vocab_size=100)
    with pytest.raises(ValueError, match=r"cannot train a 2048-piece tokenizer on this text: it has too few distinct pieces for more than [0-9,]+; lower vocab_size or give it more text$"):
        Tokenizer.train(documents[:2], vocab_size=2048)


def test_tokenizer_training_reports_its_merges_and_nothing_else(capfd):
    seen = []
    tokenizer = Tokenizer.train(stdlib_documents()[:50], vocab_size=600, progress=lambda done, total: seen.append((done, total)))
    pieces = sentencepiece_model_pb2.ModelProto.FromString(tokenizer.model_proto).pieces
    merges = sum(p.type == p.NORMAL and len(p.piece) > 1 for p in pieces)  # the rest: special, byte, user and alphabet pieces
    assert seen == [(done, merges) for done in range(100, merges + 1, 100)] and len(seen) >= 2
    assert capfd.readouterr().err == ""  # sentencepiece's log was read, not shown


def test_native_stderr_lines_are_consumed_or_passed_on(capfd):
    read = []
    with lines_of_native_stderr(lambda line: read.append(line) or line.startswith("I")):
        os.write(2, b"I an info line\nW a warning\n")
    assert read == ["I an info line", "W a warning"] and capfd.readouterr().err == "W a warning\n"
    os.write(2, b"after\n")  # stderr is itself again
    assert capfd.readouterr().err == "after\n" and read == ["I an info line", "W a warning"]


def test_a_phase_says_its_start_its_progress_now_and_then_and_its_outcome(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: now[0])
    said = []
    tokenising = Phase(said.append, "tokenising 4 documents", every=5.0)
    for t, done in [(1.0, 1), (6.0, 2), (7.0, 3), (12.0, 4)]:  # too soon, due, too soon again, finished
        now[0] = t
        tokenising.progress(done, 4, "documents")
    tokenising.done("9 tokens")
    assert said == ["tokenising 4 documents", "  2/4 documents (50%, 6.0 s)", "  9 tokens (12.0 s)"]
    assert duration(75) == "1:15"


def test_the_eta_leaves_out_the_first_step_and_smooths_the_pace(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: now[0])
    pace = Pace()
    pace.start(first_step_seconds=10.0)
    assert pace.eta(5) == 50.0  # nothing timed yet: the first step (its compile included) stands in
    for _ in range(4):
        pace.stepped()
    now[0] = 2.0
    assert pace.lap() == 0.5 and pace.eta(10) == 5.0
    now[0] = 3.0  # an evaluation, not counted
    pace.resume()
    for _ in range(4):
        pace.stepped()
    now[0] = 7.0
    assert pace.lap() == 1.0 and pace.eta(10) == pytest.approx(10 * (0.3 * 1.0 + 0.7 * 0.5))


def data_config(**fields):
    return config.DataConfig.from_dict(fields)


def test_text_and_jsonl_sources(tmp_path):
    (tmp_path / "a.txt").write_text("first document")
    (tmp_path / "b.txt").write_text("second document")
    (tmp_path / "blank.txt").write_text("  \n")
    assert read_documents(data_config(source="text", paths=[str(tmp_path / "*.txt")])) == ["first document", "second document"]
    (tmp_path / "d.jsonl").write_text(json.dumps({"body": "one"}) + "\n\n" + json.dumps({"body": "two"}) + "\n")
    assert read_documents(data_config(source="jsonl", paths=[str(tmp_path / "d.jsonl")], text_field="body")) == ["one", "two"]


def test_token_sources_are_memory_mapped(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(10, dtype=np.int32))
    np.arange(5, dtype=np.uint16).tofile(tmp_path / "b.bin")
    one = read_token_stream(data_config(source="tokens", paths=[str(tmp_path / "a.npy")]))
    assert isinstance(one, np.memmap) or isinstance(one.base, np.memmap)
    both = read_token_stream(data_config(source="tokens", paths=[str(tmp_path / "a.npy"), str(tmp_path / "b.bin")]))
    np.testing.assert_array_equal(both, [*range(10), *range(5)])


@pytest.mark.parametrize(
    "files, fields, message",
    [
        ({}, dict(source="text", paths=["nowhere/*.txt"]), "data.paths: 'nowhere/\\*.txt' matches no files"),
        ({"e.txt": " "}, dict(source="text", paths=["e.txt"]), "the text data \\(e.txt\\) holds no text"),
        ({"d.jsonl": '{"text": "ok"}\n{"body": "x"}\n'}, dict(source="jsonl", paths=["d.jsonl"]), "d.jsonl:2: no string field 'text'"),
        ({"d.jsonl": "{not json\n"}, dict(source="jsonl", paths=["d.jsonl"]), "d.jsonl:1: not valid JSON"),
        ({"t.bin": b""}, dict(source="tokens", paths=["t.bin"]), "the token files \\(t.bin\\) are empty"),
    ],
)
def test_bad_data_is_named(tmp_path, monkeypatch, files, fields, message):
    monkeypatch.chdir(tmp_path)
    for name, content in files.items():
        (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataError, match=message):
        data = data_config(**fields)
        read_token_stream(data) if data.source == "tokens" else read_documents(data)


def test_bad_data_configs():
    with pytest.raises(config.ConfigError, match="paths: source 'text' needs at least one file or glob"):
        data_config(source="text")
    with pytest.raises(config.ConfigError, match="paths: the stdlib source reads no files"):
        data_config(paths=["x.txt"])
    with pytest.raises(config.ConfigError, match="grad_accumulation: batch_size=6 does not split into 4 equal micro-batches"):
        config.TrainConfig(batch_size=6, grad_accumulation=4)
