import torch

from lanistr.config import LanistrConfig
from lanistr.data.segments import split_into_segments, window_starts
from lanistr.nn import LanistrForTokenClassification, load_model
from lanistr.nn.hierarchical import LanistrForDocumentClassification
from lanistr.tasks.predict import sliding_window_logits


def test_segments_overlap_cover_the_document_and_respect_the_cap():
    ids = list(range(10, 40))  # 30 tokens
    segs, cut = split_into_segments(ids, segment_len=12, stride=6, max_segments=10, cls_id=1, sep_id=2)
    assert not cut
    assert all(len(s) <= 12 and s[0] == 1 and s[-1] == 2 for s in segs)
    covered = {t for s in segs for t in s[1:-1]}
    assert covered == set(ids)
    assert segs[0][1:-1][6:] == segs[1][1:-1][:4]  # 10-token bodies, stride 6: 4 shared
    segs, cut = split_into_segments(ids, 12, 6, max_segments=2, cls_id=1, sep_id=2)
    assert cut and len(segs) == 2
    assert window_starts(5, 10, 3) == [0]


def _doc_config():
    return LanistrConfig.from_name("tiny", labels=["a", "b"], long="hierarchical",
                                   hierarchical={"segment_len": 8, "stride": 4,
                                                 "max_segments": 4, "doc_layers": 1})


def test_document_model_ignores_padding_segments_and_round_trips(tmp_path):
    model = LanistrForDocumentClassification(_doc_config()).eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 99, (2, 4, 8), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 2:] = 0  # the second document has 2 segments
    ids = ids * mask
    out = model(ids, mask)
    alone = model(ids[1:, :2], mask[1:, :2])
    torch.testing.assert_close(out.logits[1], alone.logits[0], atol=1e-5, rtol=1e-5)
    model.save_pretrained(tmp_path / "doc")
    again = load_model(tmp_path / "doc").eval()
    assert type(again) is LanistrForDocumentClassification
    torch.testing.assert_close(again(ids, mask).logits, out.logits)


def test_document_model_learns_a_toy_task():
    torch.manual_seed(0)
    model = LanistrForDocumentClassification(_doc_config())
    ids = torch.randint(10, 99, (16, 3, 8))
    y = torch.arange(16) % 2
    ids[y == 1, 2, 3] = 7  # the label is visible in the last segment only
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(model(ids).logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (model(ids).logits.argmax(-1) == y).all()


def test_sliding_window_tagging_equals_a_full_pass_when_it_fits():
    config = LanistrConfig.from_name("tiny", labels=["x", "y", "z"], max_len=64)
    model = LanistrForTokenClassification(config).eval()
    ids = torch.randint(5, 99, (20,)).tolist()
    full = model(torch.tensor([[1, *ids, 2]])).logits[0, 1:-1]
    torch.testing.assert_close(sliding_window_logits(model, ids, 64, 16, 1, 2), full)
    long = torch.randint(5, 99, (150,)).tolist()
    out = sliding_window_logits(model, long, 32, 10, 1, 2)
    assert out.shape == (150, 3) and torch.isfinite(out).all()
    # A piece in the middle of a window gets exactly that window's logits.
    window = model(torch.tensor([[1, *long[10:40], 2]])).logits[0, 1:-1]
    torch.testing.assert_close(out[25], window[15])


def test_finetune_hierarchical_reads_whole_documents(tmp_path):
    """The label word sits at the end of long documents: truncation to one segment cannot
    see it; the hierarchical model reads every segment and learns it."""
    import json
    import random

    from lanistr.cli import main
    from lanistr.data.tokenizer import train_tokenizer
    from lanistr.tasks.predict import Predictor

    rng = random.Random(0)
    filler = "alpha beta gamma delta epsilon zeta eta theta".split()
    rows = []
    for i in range(32):
        label = ["red", "blue"][i % 2]
        words = [rng.choice(filler) for _ in range(40)] + [label]
        rows.append({"text": " ".join(words), "label": label})
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n\n".join(r["text"] for r in rows), encoding="utf-8")
    train_tokenizer([corpus], 80, tmp_path / "tok")
    sets = {"task": "classify", "init": "scratch", "data.tokenizer": tmp_path / "tok",
            "data.train": data, "model.preset": "tiny", "model.long": "hierarchical",
            "model.hierarchical.segment_len": 16, "model.hierarchical.stride": 12,
            "model.hierarchical.max_segments": 8, "train.lr": 3e-3, "train.batch_size": 8,
            "train.epochs": 30, "train.progress": "false", "train.save_every": 1000}
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    assert main(["finetune", "--output", str(tmp_path / "run"), *args]) == 0
    predictor = Predictor(tmp_path / "run" / "model")
    assert type(predictor.model).__name__ == "LanistrForDocumentClassification"
    assert predictor.evaluate_file(data)["accuracy"] == 1.0
