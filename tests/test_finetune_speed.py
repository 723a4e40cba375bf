"""Fast fine-tuning: frozen lower layers computed once and cached give the same logits and
gradients as recomputing them (and the same trained weights end to end)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from lanistr.config import LanistrConfig
from lanistr.nn import LanistrForSequenceClassification, LanistrForTokenClassification
from lanistr.precision import autocast
from lanistr.tasks import frozen_cache, param_groups
from lanistr.tasks.labelled import Encoded, length_batches, pad_batch


def _examples(n=10, vocab=99, seed=0):
    rng = np.random.default_rng(seed)
    ids = [np.concatenate([[2], rng.integers(5, vocab, int(rng.integers(2, 12))), [3]])
           .astype(np.int32) for _ in range(n)]
    return Encoded("<toy>", list(range(1, n + 1)), ids, None,
                   rng.integers(0, 3, n).astype(np.int64))


@pytest.mark.parametrize("cls", [LanistrForSequenceClassification, LanistrForTokenClassification])
@pytest.mark.parametrize("pooling", ["mean", "first"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cached_frozen_layers_give_the_same_logits_and_gradients(cls, pooling, precision):
    """In fp32 exactly (up to float rounding); under bf16 autocast (the cache computed in it,
    as the training computes it) within bf16's rounding: a batch of another composition and
    padding rounds its products differently."""
    config = LanistrConfig.from_name("tiny", labels=["a", "b", "c"], pooling=pooling,
                                     use_pooler=pooling == "first", num_layers=3)
    torch.manual_seed(0)
    model = cls(config)
    k = 2
    param_groups.freeze(model, True, k)
    data = _examples()
    cache = frozen_cache.compute_cache(model, data, k, pad_id=0, batch_size=3,
                                       precision=precision)
    assert all(s.dtype == torch.float32 for s in cache.states)
    tol = {} if precision == "fp32" else {"rtol": 2e-2, "atol": 2e-2}
    cpu = torch.device("cpu")
    pick = [7, 1, 4, 9]  # a batch in another order and padding than the cache's batches
    batch = pad_batch([data.ids[i] for i in pick], 0)

    def grads():
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    # reference: the whole model, frozen layers without dropout (eval), the rest training
    model.train()
    model.model.encoder.embeddings.eval()
    for layer in model.model.encoder.layers[:k]:
        layer.eval()
    torch.manual_seed(1)
    with autocast(precision, cpu):
        ref = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).logits
    ref.float().square().sum().backward()
    ref_grads = grads()
    model.zero_grad(set_to_none=True)

    model.train()  # the cached path never runs the frozen layers
    torch.manual_seed(1)
    with autocast(precision, cpu):
        got = model.logits_from_layer(cache.rows(pick), batch["attention_mask"], k)
    got.float().square().sum().backward()
    if cls is LanistrForTokenClassification:
        keep = batch["attention_mask"].bool()
        assert_close(got[keep], ref[keep], **tol)
    else:
        assert_close(got, ref, **tol)
    got_grads = grads()
    assert got_grads.keys() == ref_grads.keys() and len(got_grads) > 0
    for name in ref_grads:
        assert_close(got_grads[name], ref_grads[name], msg=name, **tol)


def test_cache_size_is_tokens_times_hidden_times_four_bytes():
    config = LanistrConfig.from_name("tiny", labels=["a", "b"])
    model = LanistrForSequenceClassification(config)
    data = _examples(6)
    cache = frozen_cache.compute_cache(model, data, 1, pad_id=0)
    tokens = sum(len(x) for x in data.ids)
    assert cache.nbytes == tokens * config.hidden_size * 4
    assert [s.shape[0] for s in cache.states] == [len(x) for x in data.ids]


def test_finetune_with_the_cache_trains_the_same_weights_as_without(tmp_path):
    """End to end through `lanistr finetune`: dropout 0 so that frozen layers compute the
    same in train and eval mode; the cached run ends with the same weights."""
    import json

    from lanistr.checkpoint import read_weights
    from lanistr.cli import main
    from lanistr.data.tokenizer import train_tokenizer

    words = "apple banana cherry grape rock stone metal iron".split()
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(40):
        label = int(rng.integers(0, 2))
        pool = words[:4] if label == 0 else words[4:]
        rows.append({"text": " ".join(rng.choice(pool, int(rng.integers(2, 9)))),
                     "label": ["fruit", "stone"][label]})
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(r["text"] for r in rows), encoding="utf-8")
    train_tokenizer([corpus], 60, tmp_path / "tok")
    weights = {}
    for cache in ("true", "false"):
        out = tmp_path / f"run-{cache}"
        sets = {"init": "scratch", "model.preset": "tiny", "model.dropout": 0.0,
                "model.attention_dropout": 0.0, "data.tokenizer": tmp_path / "tok",
                "data.train": train, "data.max_len": 16, "data.eval_fraction": 0.2,
                "finetune.freeze_layers": 1, "finetune.cache_frozen": cache,
                "train.epochs": 2, "train.batch_size": 8, "train.lr": 3e-3,
                "train.progress": "false", "train.num_threads": 1,
                "train.precision": "fp32"}  # bf16 rounds the two paths' batches apart
        argv = ["finetune", "--output", str(out)]
        for key, value in sets.items():
            argv += ["--set", f"{key}={value}"]
        assert main(argv) == 0
        weights[cache] = read_weights(out / "model")
        log = (out / "train.log").read_text()
        assert ("computed once and cached" in log) == (cache == "true")
    for name, value in weights["false"].items():
        assert_close(weights["true"][name], value, rtol=1e-4, atol=1e-5, msg=name)


def test_length_batches_cover_every_index_once_in_batches_of_similar_length():
    seqs = [[0] * n for n in (5, 1, 3, 3, 9, 2, 7)]
    batches = list(length_batches(seqs, 3))
    assert batches == [[1, 5, 2], [3, 0, 6], [4]]  # by length; 2 before 3 (stable)
    # ranks split the sorted order between them; together they are the whole set once
    shards = [list(length_batches(seqs, 2, rank=r, world_size=2)) for r in (0, 1)]
    assert shards == [[[1, 2], [0, 4]], [[5, 3], [6]]]
    assert sorted(i for shard in shards for b in shard for i in b) == list(range(len(seqs)))
    assert list(length_batches(seqs, 8, limit=3)) == [[1, 2, 0]]  # the first 3 only
    assert list(length_batches([], 4)) == []


# --------------------------------------------------------------------- length-grouped batches


def test_length_grouped_order_trains_the_same_examples_with_less_padding():
    from lanistr.tasks.trainer import GlobalOrder, padded_fraction

    rng = np.random.default_rng(0)
    lengths = np.concatenate([rng.integers(5, 20, 900), rng.integers(100, 128, 100)])
    rng.shuffle(lengths)
    size, batch = len(lengths), 16  # 1000 = 62 batches + a remainder of 8
    plain = GlobalOrder(size, seed=3)
    grouped = GlobalOrder(size, seed=3, lengths=lengths, group=batch)
    whole = size - size % batch
    for epoch in (0, 1):
        a, b = plain.permutation(epoch), grouped.permutation(epoch)
        assert sorted(b.tolist()) == list(range(size))
        # the same examples trained in the epoch, the same remainder skipped
        assert set(a[:whole].tolist()) == set(b[:whole].tolist())
        assert np.array_equal(a[whole:], b[whole:])
        # every batch comes sorted out of one mega-batch: lengths never rise within it
        blocks = lengths[b[:whole]].reshape(-1, batch)
        assert (np.diff(blocks, axis=1) <= 0).all()
        assert padded_fraction(b, lengths, batch) < 0.5 * padded_fraction(a, lengths, batch)
    # seeded by (seed, epoch): the same order again, another order the next epoch, and the
    # batches not sorted by length across the epoch
    again = GlobalOrder(size, seed=3, lengths=lengths, group=batch)
    assert np.array_equal(again.permutation(1), grouped.permutation(1))
    assert not np.array_equal(grouped.permutation(0), grouped.permutation(1))
    firsts = lengths[grouped.permutation(0)[:whole:batch]]
    assert (np.diff(firsts) > 0).any() and (np.diff(firsts) < 0).any()
