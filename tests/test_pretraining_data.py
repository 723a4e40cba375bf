"""Pretraining data: token cache, packing, NSP pairs and (whole-word) masking."""

from __future__ import annotations

import json
import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from lanistr.data.pretraining import (
    IGNORE_INDEX,
    MLMCollator,
    NSPDataset,
    PackedDataset,
    build_token_cache,
)
from lanistr.data.tokenizer import Tokenizer, train_tokenizer
from lanistr.errors import ConfigError, DataError, LanistrError


def write_corpus(path: Path, docs: int, seed: int = 0) -> Path:
    """Documents of random words (Zipf-like, so that many words split into several pieces)."""
    rnd = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rnd.choice(letters) for _ in range(rnd.randint(1, 10))) for _ in range(400)]
    weights = [1.0 / (rank + 1) ** 0.8 for rank in range(len(words))]
    blocks = []
    for _ in range(docs):
        lines = [
            " ".join(rnd.choices(words, weights, k=rnd.randint(2, 30)))
            + rnd.choice([".", ",", "!"])
            for _ in range(rnd.randint(1, 4))
        ]
        blocks.append("\n".join(lines))
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    files = [write_corpus(root / "a.txt", 150, seed=1), write_corpus(root / "b.txt", 150, seed=2)]
    tokenizer = train_tokenizer(files, vocab_size=250, output_dir=root / "tok")
    cache = build_token_cache(files, tokenizer, root / "cache")
    return files, tokenizer, cache, root


def word_groups(ids: np.ndarray, word_start: np.ndarray, special: set[int]) -> list[list[int]]:
    """Positions of each word: a word-start piece (or a piece after a special) plus what follows."""
    groups: list[list[int]] = []
    previous_special = True
    for t, token in enumerate(ids):
        if token in special:
            previous_special = True
            continue
        if word_start[t] or previous_special:
            groups.append([])
        groups[-1].append(t)
        previous_special = False
    return groups


# --------------------------------------------------------------------------- cache


def test_cache_holds_every_document_with_word_starts(setup):
    files, tokenizer, cache, _ = setup
    from lanistr.data.readers import read_documents

    texts = [d.text for f in files for d in read_documents(f)]
    assert cache.num_documents == len(texts) == 300
    assert not cache.reused
    assert cache.ids.dtype == np.int32 and cache.word_start.dtype == np.uint8
    assert isinstance(cache.ids, np.memmap)
    encoded = tokenizer.encode_documents(texts)
    for d in (0, 1, 149, 150, 299):
        np.testing.assert_array_equal(cache.document(d), encoded[d][0])
        lo, hi = cache.doc_offsets[d], cache.doc_offsets[d + 1]
        np.testing.assert_array_equal(cache.word_start[lo:hi], encoded[d][1])
        pieces = tokenizer.convert_ids_to_tokens(cache.document(d))
        starts = [not p.startswith("##") for p in pieces]
        assert starts == cache.word_start[lo:hi].astype(bool).tolist()
    assert cache.special_ids == tokenizer.special_ids and cache.vocab_size == tokenizer.vocab_size
    # Pickles by path (for DataLoader workers), not by copying the arrays.
    blob = pickle.dumps(cache)
    assert len(blob) < 1000
    np.testing.assert_array_equal(pickle.loads(blob).ids, cache.ids)


def test_cache_is_reused_and_invalidated(setup, monkeypatch):
    files, tokenizer, cache, root = setup

    def no_encoding(*args, **kwargs):
        raise AssertionError("a reused cache must not tokenise again")

    monkeypatch.setattr(Tokenizer, "encode_documents", no_encoding)
    again = build_token_cache([str(f) for f in files], tokenizer, root / "cache")
    assert again.reused and again.path == cache.path
    np.testing.assert_array_equal(again.ids, cache.ids)
    monkeypatch.undo()

    # A changed file (new mtime/size) or another tokenizer gives a new cache.
    copy = root / "changed.txt"
    copy.write_text(files[0].read_text(encoding="utf-8"), encoding="utf-8")
    first = build_token_cache([copy], tokenizer, root / "cache")
    os.utime(copy, ns=(first.path.stat().st_mtime_ns, copy.stat().st_mtime_ns + 10**9))
    second = build_token_cache([copy], tokenizer, root / "cache")
    assert second.path != first.path and not second.reused
    other = train_tokenizer(files, vocab_size=120, output_dir=None)
    assert build_token_cache([copy], other, root / "cache").path not in (first.path, second.path)
    assert not list((root / "cache").glob(".*.tmp"))  # no leftovers of the atomic write


def test_cache_errors_are_one_line(setup, tmp_path):
    _, tokenizer, _, _ = setup
    cases = {}
    cases["missing"] = (tmp_path / "missing.txt", "no such file")
    (tmp_path / "empty.txt").write_text("\n   \n\n")
    cases["empty"] = (tmp_path / "empty.txt", "empty")
    (tmp_path / "bad.txt").write_bytes(b"fine\n\nalso fine\nbad \xc3\x28 byte\n")
    cases["utf8"] = (tmp_path / "bad.txt", "bad.txt:4: not valid UTF-8")
    (tmp_path / "blank.jsonl").write_text(json.dumps({"text": "  "}) + "\n")
    cases["no tokens"] = (tmp_path / "blank.jsonl", "no tokens")
    for path, message in cases.values():
        with pytest.raises(DataError, match=message) as info:
            build_token_cache([path], tokenizer, tmp_path / "cache")
        assert "\n" not in str(info.value)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


# --------------------------------------------------------------------------- packing


@pytest.mark.parametrize("max_len", [5, 8, 33, 128])
def test_packing_fills_sequences_and_loses_no_token(setup, max_len):
    _, _, cache, _ = setup
    s = cache.special_ids
    data = PackedDataset(cache, max_len)
    lengths = [len(data[i]["input_ids"]) for i in range(len(data))]
    assert max(lengths) <= max_len
    assert all(n == max_len for n in lengths[:-1])  # only the last can be short
    body = []
    for i in range(len(data)):
        item = data[i]
        ids = item["input_ids"]
        assert ids.dtype == np.int64 and item["word_start"].dtype == np.uint8
        assert ids[0] == s.cls and ids[-1] == s.sep and int(item["index"]) == i
        assert (item["token_type_ids"] == 0).all()
        assert item["word_start"][0] == 0 and item["word_start"][-1] == 0
        body.append(ids[1:-1])
    # The bodies, joined, are the documents joined by [SEP]: every token once, in order.
    stream = np.concatenate(body)
    expected = []
    for d in range(cache.num_documents):
        if d:
            expected.append([s.sep])
        expected.append(cache.document(d))
    np.testing.assert_array_equal(stream, np.concatenate(expected))
    # Deterministic and indexable from the end.
    np.testing.assert_array_equal(data[len(data) - 1]["input_ids"], data[-1]["input_ids"])
    with pytest.raises(IndexError):
        data[len(data)]


def test_packing_rejects_tiny_max_len(setup):
    with pytest.raises(ConfigError, match="max_len"):
        PackedDataset(setup[2], 2)


# --------------------------------------------------------------------------- NSP


def test_nsp_pairs(setup):
    _, _, cache, _ = setup
    s = cache.special_ids
    data = NSPDataset(cache, max_len=24, seed=7)
    assert len(data) > 900
    labels = []
    flat = np.asarray(cache.ids)
    for i in range(len(data)):
        item = data[i]
        ids, types = item["input_ids"], item["token_type_ids"]
        assert len(ids) <= 24 and ids[0] == s.cls and ids[-1] == s.sep
        seps = np.flatnonzero(ids == s.sep)
        assert len(seps) == 2 and seps[0] >= 2 and seps[1] > seps[0] + 1  # A and B non-empty
        assert (types[: seps[0] + 1] == 0).all() and (types[seps[0] + 1 :] == 1).all()
        a, b = ids[1 : seps[0]], ids[seps[0] + 1 : -1]
        label = int(item["nsp_label"])
        labels.append(label)
        doc = int(data._doc[i])
        lo, hi = cache.doc_offsets[doc], cache.doc_offsets[doc + 1]
        start = lo + int(data._start[i])
        np.testing.assert_array_equal(a, flat[start : start + len(a)])  # A comes from its chunk
        if label == 0:  # B is the actual continuation
            np.testing.assert_array_equal(b, flat[start + len(a) : start + len(a) + len(b)])
        else:  # B lies in another document
            found = np.flatnonzero(flat[: len(flat) - len(b) + 1] == b[0])
            windows = [p for p in found if np.array_equal(flat[p : p + len(b)], b)]
            assert windows and any(not lo <= p < hi for p in windows)
    assert abs(np.mean(labels) - 0.5) < 0.05
    # Deterministic given (seed, index); another seed gives other pairs.
    again = NSPDataset(cache, max_len=24, seed=7)
    other = NSPDataset(cache, max_len=24, seed=8)
    assert all(np.array_equal(data[i]["input_ids"], again[i]["input_ids"]) for i in range(50))
    assert any(not np.array_equal(data[i]["input_ids"], other[i]["input_ids"]) for i in range(50))


def test_nsp_needs_two_documents(tmp_path, setup):
    _, tokenizer, _, _ = setup
    (tmp_path / "one.txt").write_text("just one document here\n")
    cache = build_token_cache([tmp_path / "one.txt"], tokenizer, tmp_path / "cache")
    with pytest.raises(LanistrError, match="at least 2 documents"):
        NSPDataset(cache, 32)


# --------------------------------------------------------------------------- masking


def _masking_stats(collator, data, epochs):
    special = set(collator.special_ids.all)
    totals = dict(candidates=0, selected=0, masked=0, random=0, kept=0)
    regular_random = True
    for epoch in epochs:
        indices = list(range(len(data)))
        for lo in range(0, len(indices), 32):
            batch_idx = indices[lo : lo + 32]
            examples = [data[i] for i in batch_idx]
            out = collator(examples, batch_idx, epoch=epoch)
            for row, ex in enumerate(examples):
                original = ex["input_ids"]
                n = len(original)
                labels = out["mlm_labels"][row, :n].numpy()
                masked = out["input_ids"][row, :n].numpy()
                chosen = labels != IGNORE_INDEX
                candidates = sum(t not in special for t in original)
                totals["candidates"] += candidates
                totals["selected"] += chosen.sum()
                np.testing.assert_array_equal(labels[chosen], original[chosen])
                assert (masked[~chosen] == original[~chosen]).all()
                is_mask = masked[chosen] == collator.special_ids.mask
                is_kept = masked[chosen] == original[chosen]
                totals["masked"] += is_mask.sum()
                totals["kept"] += is_kept.sum()
                totals["random"] += (~is_mask & ~is_kept).sum()
                replaced = masked[chosen][~is_mask & ~is_kept]
                regular_random &= not any(t in special for t in replaced)
    return totals, regular_random


@pytest.mark.parametrize("whole_word", [False, True])
def test_masking_statistics(setup, whole_word):
    _, tokenizer, cache, _ = setup
    collator = MLMCollator.for_cache(cache, whole_word_mask=whole_word, seed=3)
    data = PackedDataset(cache, 64)
    totals, regular_random = _masking_stats(collator, data, epochs=range(3))
    selected = totals["selected"] / totals["candidates"]
    assert abs(selected - 0.15) < 0.01
    if not whole_word:  # exactly round(0.15 n) per sequence
        for i in range(5):
            n = int((~np.isin(data[i]["input_ids"], collator.special_ids.all)).sum())
            out = collator([data[i]], [i])
            assert (out["mlm_labels"] != IGNORE_INDEX).sum() == int(np.floor(0.15 * n + 0.5))
    assert abs(totals["masked"] / totals["selected"] - 0.8) < 0.02
    assert abs(totals["random"] / totals["selected"] - 0.1) < 0.02
    assert abs(totals["kept"] / totals["selected"] - 0.1) < 0.02
    assert regular_random  # a random replacement is never a special token


def test_whole_words_are_masked_together(setup):
    _, _, cache, _ = setup
    collator = MLMCollator.for_cache(cache, whole_word_mask=True, seed=0)
    special = set(collator.special_ids.all)
    multi_piece_selected = 0
    for data in (PackedDataset(cache, 40), NSPDataset(cache, 40, seed=1)):
        for i in range(len(data)):
            item = data[i]
            labels = collator([item], [i])["mlm_labels"][0].numpy()
            for group in word_groups(item["input_ids"], item["word_start"], special):
                chosen = {bool(labels[t] != IGNORE_INDEX) for t in group}
                assert len(chosen) == 1, (i, group)
                multi_piece_selected += len(group) > 1 and chosen == {True}
    assert multi_piece_selected > 50  # the test exercised multi-piece words


def test_mask_depends_only_on_seed_epoch_and_index(setup):
    _, _, cache, _ = setup
    data = NSPDataset(cache, 48, seed=0)
    collator = MLMCollator.for_cache(cache, seed=11)
    indices = [5, 17, 2, 40, 33, 8]
    examples = [data[i] for i in indices]
    full = collator(examples, indices, epoch=2)
    assert full["nsp_labels"].dtype == torch.int64 and full["nsp_labels"].shape == (6,)
    assert {k: v.dtype for k, v in full.items()} == dict.fromkeys(full, torch.int64)
    width = full["input_ids"].shape[1]
    assert all(
        full[k].shape == (6, width)
        for k in ("input_ids", "attention_mask", "token_type_ids", "mlm_labels")
    )

    def rows(out, b):
        n = int(out["attention_mask"][b].sum())
        return [out[k][b, :n].tolist() for k in ("input_ids", "token_type_ids", "mlm_labels")]

    # Other batch compositions and orders (as on other ranks or batch sizes) give the same rows.
    for part in ([3, 0], [5], [1, 2, 4]):
        sub = collator([examples[p] for p in part], [indices[p] for p in part], epoch=2)
        for row, p in enumerate(part):
            assert rows(sub, row) == rows(full, p)
            assert sub["nsp_labels"][row] == full["nsp_labels"][p]
    # Padding is pad / 0 / -100.
    short = int(full["attention_mask"].sum(1).argmin())
    n = int(full["attention_mask"][short].sum())
    if n < width:
        assert (full["input_ids"][short, n:] == cache.special_ids.pad).all()
        assert (full["mlm_labels"][short, n:] == IGNORE_INDEX).all()
    # The index can come from the examples; set_epoch is the default epoch.
    collator.set_epoch(2)
    assert rows(collator(examples), 0) == rows(full, 0)
    # Another epoch, seed or index gives another mask.
    other_epoch = collator(examples, indices, epoch=3)
    assert not torch.equal(other_epoch["mlm_labels"], full["mlm_labels"])
    other_seed = MLMCollator.for_cache(cache, seed=12)(examples, indices, epoch=2)
    assert not torch.equal(other_seed["mlm_labels"], full["mlm_labels"])


def test_collator_rejects_bad_settings(setup):
    _, tokenizer, _, _ = setup
    with pytest.raises(ConfigError, match="mlm_probability"):
        MLMCollator.for_tokenizer(tokenizer, mlm_probability=1.5)
    with pytest.raises(ConfigError, match="vocab_size"):
        MLMCollator(tokenizer.special_ids, vocab_size=4)
