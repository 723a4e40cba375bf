"""Seq2seq: causal decoder, KV-cache generation, beam search, BLEU, markup, training, CLI."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lanistr.config import LanistrConfig
from lanistr.nn.decoder import (
    GenerationConfig,
    LanistrForSeq2Seq,
    LanistrForSeq2SeqCopy,
    decode_until_eos,
)

ROOT = Path(__file__).resolve().parents[1]
BOS, EOS, PAD = 2, 3, 0


def tiny_model(norm: str = "post", layers: int = 2, seed: int = 0, copy: bool = False,
               **overrides):
    torch.manual_seed(seed)
    config = LanistrConfig.from_name("tiny", norm=norm, decoder_layers=layers, **overrides)
    return (LanistrForSeq2SeqCopy if copy else LanistrForSeq2Seq)(config).eval()


def sources(b: int = 3, t: int = 7, lengths=(7, 5, 3), seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 99, (b, t), generator=g)
    mask = torch.zeros(b, t, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    return ids.masked_fill(mask == 0, PAD), mask


def gen(**kw) -> GenerationConfig:
    return GenerationConfig(bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD,
                            **{"max_new_tokens": 12, **kw})


# ------------------------------------------------------------------------- the decoder


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_future_decoder_tokens_do_not_change_earlier_outputs(norm):
    model = tiny_model(norm)
    ids, mask = sources()
    dec = torch.randint(5, 99, (3, 6))
    out = model(ids, mask, dec).logits
    changed = dec.clone()
    changed[:, 4:] = torch.randint(5, 99, (3, 2))
    out2 = model(ids, mask, changed).logits
    torch.testing.assert_close(out[:, :4], out2[:, :4])
    assert not torch.allclose(out[:, 4:], out2[:, 4:])


def test_source_padding_does_not_change_outputs():
    model = tiny_model()
    ids, mask = sources()
    dec = torch.randint(5, 99, (3, 5))
    full = model(ids, mask, dec).logits
    alone = model(ids[2:, :3], mask[2:, :3], dec[2:]).logits  # row 2 without its padding
    torch.testing.assert_close(full[2:], alone, atol=1e-5, rtol=1e-5)


def test_logit_positions_select_rows():
    model = tiny_model()
    ids, mask = sources()
    dec = torch.randint(5, 99, (3, 5))
    positions = torch.rand(3, 5) > 0.4
    dense = model(ids, mask, dec).logits
    sparse = model(ids, mask, dec, logit_positions=positions).logits
    torch.testing.assert_close(sparse, dense[positions])


@pytest.mark.parametrize("norm,copy", [("post", False), ("pre", False), ("post", True)])
@pytest.mark.parametrize("beams", [1, 3])
def test_cached_and_uncached_generation_agree(norm, copy, beams):
    model = tiny_model(norm, copy=copy)
    ids, mask = sources()
    cached = model.generate(ids, mask, gen(num_beams=beams))
    uncached = model.generate(ids, mask, gen(num_beams=beams, use_cache=False))
    assert torch.equal(cached.sequences, uncached.sequences)
    torch.testing.assert_close(cached.scores, uncached.scores)


@pytest.mark.parametrize("copy", [False, True])
def test_cache_step_equals_full_recompute(copy):
    model = tiny_model(copy=copy)
    ids, mask = sources()
    ctx = model.context(ids, *model.encode(ids, mask))
    cache = model.new_cache(ctx, 8)
    prefix = torch.randint(5, 99, (3, 6))
    prefix[:, 0] = BOS
    steps = [model._next_logits(prefix[:, :t + 1], ctx, cache) for t in range(6)]
    h, _ = model.decoder(prefix, ctx.cross_kv, ctx.padding)
    full = model.head(h, ctx)
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_one_beam_is_greedy():
    model = tiny_model(seed=3)
    ids, mask = sources(seed=3)
    greedy = model.generate(ids, mask, gen())
    beam = model.generate(ids, mask, gen(num_beams=1, length_penalty=0.0))
    assert torch.equal(greedy.sequences, beam.sequences)
    # the beam-search path with one beam, forced through the general code
    one = model._beam_search(model.context(ids, *model.encode(ids, mask)),
                             gen(length_penalty=0.0))
    assert torch.equal(greedy.sequences[:, :one.sequences.shape[1]], one.sequences)
    torch.testing.assert_close(greedy.scores, one.scores)


def test_greedy_stops_at_eos_and_pads_after():
    model = tiny_model()
    with torch.no_grad():
        model.lm_head.bias.zero_()
        model.lm_head.bias[EOS] = 100.0  # EOS always wins
    ids, mask = sources()
    out = model.generate(ids, mask, gen(min_new_tokens=2))
    assert out.sequences.shape[1] == 3
    assert (out.sequences[:, 2] == EOS).all() and (out.sequences[:, :2] != EOS).all()


def test_generation_longer_than_the_positions_is_refused():
    from lanistr.errors import ConfigError

    model = tiny_model()  # max_len 64: [CLS] + 63 new tokens at most
    ids, mask = sources()
    with pytest.raises(ConfigError, match="max_len=64"):
        model.generate(ids, mask, gen(max_new_tokens=64))


def test_beam_search_finds_exhaustive_best_on_a_tiny_space():
    """With a vocabulary of 3 live tokens and 3 steps, 6 beams see every prefix: the result is
    the argmax of the length-normalised score over all finished sequences."""
    model = tiny_model(seed=5, vocab_size=6)
    ids, mask = torch.randint(5, 6, (1, 4)), torch.ones(1, 4, dtype=torch.long)
    g = GenerationConfig(bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD,
                         max_new_tokens=3, num_beams=9, length_penalty=1.0)
    with torch.no_grad():
        model.lm_head.bias[[0, 1, 2]] = -1e4  # only 3 (EOS), 4, 5 can be produced
    out = model.generate(ids, mask, g)
    memory, padding = model.encode(ids, mask)

    def logp(prefix):
        tokens = torch.tensor([[BOS, *prefix]])
        h, _ = model.decoder(tokens, model.decoder.cross_kv(memory), padding)
        return F.log_softmax(model.lm_head(h[:, -1]).float(), -1)[0]

    best, best_seq = -float("inf"), None
    for a in (3, 4, 5):
        for b in ((3, 4, 5) if a != EOS else (None,)):
            for c in ((3, 4, 5) if b not in (None, EOS) else (None,)):
                seq = [x for x in (a, b, c) if x is not None]
                with torch.no_grad():
                    total = sum(float(logp(seq[:i])[seq[i]]) for i in range(len(seq)))
                if seq[-1] == EOS or len(seq) == 3:
                    score = total / len(seq)
                    if score > best:
                        best, best_seq = score, seq
    got = decode_until_eos(out.sequences, -1)[0]
    got = got[:got.index(EOS) + 1] if EOS in got else got
    assert got == best_seq
    assert float(out.scores[0]) == pytest.approx(best, abs=1e-4)


def test_copy_head_mixes_vocabulary_and_source_distributions():
    model = tiny_model(copy=True)
    ids, mask = sources()
    dec = torch.randint(5, 99, (3, 5))
    logp = model(ids, mask, dec).logits  # (B, T, V) log-probabilities
    torch.testing.assert_close(logp.logsumexp(-1), torch.zeros(3, 5), atol=1e-5, rtol=0)
    with torch.no_grad():
        model.copy_gate.bias.fill_(-1e4)  # copy only: all mass on the row's source tokens
    p = model(ids, mask, dec).logits.exp()
    for b in range(3):
        on_source = torch.zeros(99, dtype=torch.bool)
        on_source[ids[b, mask[b].bool()]] = True
        torch.testing.assert_close(p[b][:, on_source].sum(-1), torch.ones(5))


@pytest.mark.parametrize("copy", [False, True])
def test_save_load_roundtrip(tmp_path, copy):
    from lanistr.nn import load_model

    model = tiny_model(copy=copy)
    model.save_pretrained(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert type(loaded) is type(model)
    ids, mask = sources()
    dec = torch.randint(5, 99, (3, 4))
    torch.testing.assert_close(model(ids, mask, dec).logits, loaded.eval()(ids, mask, dec).logits)
    assert torch.equal(model.generate(ids, mask, gen()).sequences,
                       loaded.generate(ids, mask, gen()).sequences)


def test_from_encoder_reuses_weights_and_grows_the_vocabulary(tmp_path):
    from lanistr.nn import LanistrForMaskedLM

    torch.manual_seed(1)
    mlm = LanistrForMaskedLM(LanistrConfig.from_name("tiny"))
    mlm.save_pretrained(tmp_path / "enc")
    model = LanistrForSeq2Seq.from_encoder(tmp_path / "enc", decoder_layers=1, vocab_size=103)
    assert model.config.decoder_layers == 1 and len(model.decoder.layers) == 1
    emb = model.model.token_embedding.weight
    assert emb.shape[0] == 103
    torch.testing.assert_close(emb[:99], mlm.model.token_embedding.weight)
    torch.testing.assert_close(model.lm_head.dense.weight, mlm.mlm_head.dense.weight)
    torch.testing.assert_close(model.lm_head.bias[:99], mlm.mlm_head.bias)
    enc_layer, dec_layer = mlm.model.encoder.layers[0], model.decoder.layers[0]
    torch.testing.assert_close(dec_layer.self_attention.qkv.weight, enc_layer.attention.qkv.weight)
    torch.testing.assert_close(dec_layer.cross_attention.kv.weight,
                               enc_layer.attention.qkv.weight[32:])
    torch.testing.assert_close(dec_layer.ffn.fc2.bias, enc_layer.ffn.fc2.bias)
    # the encoder computes what it computed before
    ids, mask = sources()
    torch.testing.assert_close(model.eval().encode(ids, mask)[0],
                               mlm.eval().model(ids, mask).last_hidden_state)
    # the output head is tied to the (grown) embeddings
    assert model.lm_head.embedding[0].weight is emb


def test_tiny_model_learns_to_reverse():
    """A 2+2-layer model of width 32 learns to reverse 3-5 symbols (100% exact match)."""
    torch.manual_seed(0)
    config = LanistrConfig.from_name("tiny", vocab_size=16, decoder_layers=2, max_len=16,
                                     ffn_dim=64)
    model = LanistrForSeq2Seq(config)
    rng = random.Random(0)

    def batch(n):
        seqs = [[rng.randrange(5, 16) for _ in range(rng.randint(3, 5))] for _ in range(n)]
        src = torch.zeros(n, 7, dtype=torch.long)
        dec = torch.zeros(n, 6, dtype=torch.long)
        labels = torch.full((n, 6), -100)
        for i, s in enumerate(seqs):
            src[i, :len(s) + 2] = torch.tensor([1, *s, 4])
            target = s[::-1]
            dec[i, :len(s) + 1] = torch.tensor([BOS, *target])
            labels[i, :len(s) + 1] = torch.tensor([*target, EOS])
        return src, (src != 0).long(), dec, labels, seqs

    opt = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.0)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only add overhead
    try:
        for _ in range(250):
            src, mask, dec, labels, _ = batch(64)
            pos = labels != -100
            loss = F.cross_entropy(model(src, mask, dec, logit_positions=pos).logits,
                                   labels[pos])
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    src, mask, _, _, seqs = batch(200)
    out = model.generate(src, mask, gen(max_new_tokens=7))
    predicted = decode_until_eos(out.sequences, EOS)
    exact = sum(p == s[::-1] for p, s in zip(predicted, seqs)) / len(seqs)
    assert exact == 1.0
    beam = decode_until_eos(model.generate(src, mask, gen(max_new_tokens=7, num_beams=3))
                            .sequences, EOS)
    assert beam == predicted


# ------------------------------------------------------------------------- metrics


BLEU_CASES = [
    (["The cat sat on the mat.", "It is raining, again!"],
     ["The cat sat on the mat.", "It rains again!"]),
    (["a b c d e f", "hello there general kenobi"], ["a b c d e f g", "hello there general"]),
    (["Congress, 1,000 strong: U.S. $5.50 (20-year) plan."],
     ["Congress 1,000 strong; U.S. $5.5 (20-year-old) plan"]),
    (["completely different words"], ["nothing in common here"]),
    (["", "one two"], ["one two three", "one two"]),
    (["short"], ["a much longer reference sentence with many words"]),
]


@pytest.mark.parametrize("hyps,refs", BLEU_CASES)
def test_bleu_equals_sacrebleu(hyps, refs):
    sacrebleu = pytest.importorskip("sacrebleu")
    from lanistr.text_metrics import corpus_bleu

    assert corpus_bleu(hyps, refs) == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score,
                                                    abs=1e-9)


def test_bleu_from_summed_stats_equals_corpus_bleu():
    from lanistr.text_metrics import corpus_bleu, finalize_generation, generation_stats

    hyps = [h for hs, _ in BLEU_CASES for h in hs]
    refs = [r for _, rs in BLEU_CASES for r in rs]
    a, b = generation_stats(hyps[:4], refs[:4]), generation_stats(hyps[4:], refs[4:])
    total = {k: a[k] + b[k] for k in a}
    assert finalize_generation(total)["bleu"] == pytest.approx(corpus_bleu(hyps, refs))


def test_exact_match_and_token_f1():
    from lanistr.text_metrics import exact_match, generation_metrics, token_f1

    assert exact_match("The  cat.", "The cat.") == 1.0
    assert exact_match("the cat.", "The cat.") == 0.0
    assert token_f1("a b c", "a b d") == pytest.approx(2 / 3)
    assert token_f1("a a", "a") == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert token_f1("", "") == 1.0 and token_f1("", "x") == 0.0
    m = generation_metrics(["x y", "p"], ["x y", "q"])
    assert m["exact_match"] == 0.5 and m["token_f1"] == 0.5


# ------------------------------------------------------------------------- markup


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from lanistr.data.markup import add_markers
    from lanistr.data.tokenizer import train_tokenizer

    tmp = tmp_path_factory.mktemp("tok")
    text = ("the u.s. congress , which has 1,000 members ; nato 's 20-year plan -- and/or "
            "\" we 're here , \" he said ( really ) $ 5.50 % : ! ? mr speaker i am . [ applause ] ")
    (tmp / "corpus.txt").write_text((text + "\n") * 5, encoding="utf-8")
    tok = train_tokenizer(tmp / "corpus.txt", 200, None, min_frequency=1)
    add_markers(tok)
    return tok


MARKUP_TEXTS = [
    "The U.S. Congress, which has 1,000 members; NATO's 20-year plan -- and/or more.",
    '"We\'re here," he said (really) and paid $5.50, 20% more: really! Really?',
    "Mr. Speaker, I am here [applause] and -- I said -- we are.",
    "the plan",
]


@pytest.mark.parametrize("text", MARKUP_TEXTS)
def test_markup_roundtrip(tokenizer, text):
    from lanistr.data.markup import Markup

    markup = Markup(tokenizer)
    ids = markup.encode([text])[0]
    assert tokenizer.unk_id not in ids
    assert markup.decode(ids) == text


def test_markup_uses_few_markers(tokenizer):
    from lanistr.data.markup import JOIN, SPACE, Markup

    markup = Markup(tokenizer)
    ids = markup.encode(["The U.S. Congress, which has 1,000 members; NATO's 20-year plan "
                         "and/or more."])[0]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert JOIN not in tokens and SPACE not in tokens  # the rule covers U.S., 1,000, 20-year
    assert tokens[:2] == ["[CAP]", "the"]
    assert "[UPPER]" in tokens


def test_markup_decodes_anything(tokenizer):
    from lanistr.data.markup import Markup

    markup = Markup(tokenizer)
    skipped = set(markup.marker_ids.values()) | (markup.specials - {tokenizer.unk_id})
    rng = random.Random(0)
    for _ in range(50):  # a model may emit any sequence: decoding never fails...
        ids = [rng.randrange(tokenizer.vocab_size) for _ in range(rng.randint(0, 20))]
        text = markup.decode(ids)
        assert isinstance(text, str)
        # ...and loses nothing: every non-marker, non-special token's text comes out, in
        # order (markers only set case and spacing; "##" pieces join the previous word).
        kept = [tokenizer.backend.id_to_token(i) for i in ids if i not in skipped]
        expected = "".join(t[2:] if t.startswith("##") else t for t in kept)
        assert "".join(text.split()).lower() == "".join(expected.split()).lower(), (ids, text)
        # Special tokens (not [UNK]) add nothing: dropping them changes no character.
        if not any(i in markup.marker_ids.values() for i in ids):
            assert markup.decode([i for i in ids if i not in skipped]) == text
    assert markup.decode([]) == ""


# ------------------------------------------------------------------------- data script


def _script():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import make_restoration_pairs
    finally:
        sys.path.pop(0)
    return make_restoration_pairs


def test_restoration_pairs(tmp_path):
    mod = _script()
    assert mod.split_sentences("Mr. Smith went to the U.S. Senate. He said no! Then 3 left.") == [
        "Mr. Smith went to the U.S. Senate.", "He said no!", "Then 3 left."]
    assert mod.to_source("The U.S. nation's 20-year plan—now.") == "the us nations 20 year plan now"
    sotu = tmp_path / "sotu"
    sotu.mkdir()
    speech = "Mr. Speaker: We met. The nation\u2019s work is long and hard and good."
    (sotu / "train.txt").write_text("\n\n".join([speech] * 4) + "\n", encoding="utf-8")
    (sotu / "test.txt").write_text("Now, we go. It is done today.\n", encoding="utf-8")
    stats = mod.build(sotu, tmp_path / "out", max_words=5, min_words=2, dev_speeches=1)
    assert stats["speeches"] == {"train": 3, "dev": 1, "test": 1}
    train = [json.loads(x) for x in (tmp_path / "out" / "train.jsonl").read_text().splitlines()]
    assert train[0] == {"source": "mr speaker we met", "target": "Mr. Speaker: We met.",
                        "speech": 0}
    assert train[1]["target"] == "The nation's work is long"  # chunked at 5 words, ASCII quote
    test = [json.loads(x)["target"] for x in (tmp_path / "out" / "test.jsonl").read_text()
            .splitlines()]
    assert test == ["Now, we go.", "It is done today."]


# ------------------------------------------------------------------------- training and CLI


def _pairs(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    words = "the union state congress people nation war peace we our".split()
    with path.open("w", encoding="utf-8") as fh:
        for _ in range(n):
            w = [rng.choice(words) for _ in range(rng.randint(2, 4))]
            target = " ".join(w).capitalize() + "."
            fh.write(json.dumps({"source": " ".join(w), "target": target}) + "\n")
    return path


def test_finetune_generate_cli(tmp_path, capsys):
    """The pipeline end to end on a tiny encoder: finetune (task: seq2seq) -> model dir with
    tokenizer, generation config and metadata -> `lanistr generate` on texts and files."""
    from lanistr.cli import main
    from lanistr.data.tokenizer import train_tokenizer
    from lanistr.nn import LanistrForMaskedLM
    from lanistr.tasks.run_config import load_run
    from lanistr.tasks.seq2seq import Seq2SeqPredictor, finetune_seq2seq

    corpus = tmp_path / "c.txt"
    corpus.write_text("the union state congress people nation war peace we our .\n" * 3)
    tok = train_tokenizer(corpus, 60, tmp_path / "enc", min_frequency=1)
    torch.manual_seed(0)
    config = LanistrConfig.from_name("tiny", vocab_size=tok.vocab_size, max_len=24)
    LanistrForMaskedLM(config).save_pretrained(tmp_path / "enc")
    train, dev = _pairs(tmp_path / "train.jsonl", 64, 0), _pairs(tmp_path / "dev.jsonl", 6, 1)
    config_file = tmp_path / "run.yaml"
    config_file.write_text(
        f"task: seq2seq\ninit: {tmp_path / 'enc'}\nmodel: {{decoder_layers: 1}}\n"
        f"data: {{train: {train}, eval: {dev}, test: {dev}, max_source_len: 16, "
        "max_target_len: 12}\n"
        "finetune: {copy: true}\n"
        "train: {max_steps: 3, epochs: 0, batch_size: 16, eval_every: 3, progress: false}\n")
    run = load_run("finetune", str(config_file), [], tmp_path / "run")
    result = finetune_seq2seq(run, tmp_path / "run")
    assert result.steps == 3
    assert {"eval_loss", "eval_bleu", "eval_exact_match", "eval_token_f1"} <= set(
        result.eval_metrics)
    assert set(result.test_metrics) >= {"bleu", "exact_match", "token_f1", "examples"}
    # the same run through `lanistr finetune` (dispatch on task: seq2seq)
    assert main(["finetune", "--config", str(config_file), "--output",
                 str(tmp_path / "run2")]) == 0
    assert json.loads((tmp_path / "run2" / "test_metrics.json").read_text()) == \
        {**result.test_metrics, "model": str(tmp_path / "run2" / "model")}
    model_dir = tmp_path / "run" / "model"
    generation = json.loads((model_dir / "generation_config.json").read_text())
    assert generation["target_format"] == "markup" and generation["max_new_tokens"] == 12
    predictor = Seq2SeqPredictor(model_dir)
    assert isinstance(predictor.model, LanistrForSeq2SeqCopy)
    assert predictor.tokenizer.convert_tokens_to_ids("[CAP]") != predictor.tokenizer.unk_id

    expected = predictor.generate(["war peace", "we our union"], num_beams=2)
    capsys.readouterr()
    assert main(["generate", "--model", str(model_dir), "war peace", "we our union",
                 "--beams", "2"]) == 0
    assert capsys.readouterr().out.splitlines() == expected
    out_file = tmp_path / "pred.jsonl"
    assert main(["generate", "--model", str(model_dir), "--input", str(dev),
                 "--output", str(out_file)]) == 0
    rows = [json.loads(x) for x in out_file.read_text().splitlines()]
    assert [r["prediction"] for r in rows] == predictor.generate([r["source"] for r in rows])
    assert "exact_match=" in capsys.readouterr().out
    assert main(["generate", "--model", str(tmp_path / "enc"), "x"]) == 2
    metrics_file = tmp_path / "metrics.json"
    assert main(["evaluate", "--model", str(model_dir), "--data", str(dev), "--output",
                 str(metrics_file), "--no-progress"]) == 0
    metrics = json.loads(metrics_file.read_text())
    assert metrics["task"] == "seq2seq" and metrics["examples"] == 6
    assert metrics["bleu"] == pytest.approx(result.test_metrics["bleu"])
    assert main(["generate", "--model", str(model_dir)]) == 2
