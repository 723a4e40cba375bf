"""Attention visualization: rollout, word merging, compact sparse forms, figures, the HTML
viewer (parsed, and rendered in headless Chromium when one is installed) and the CLI."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from lanistr import viz
from lanistr.cli import main
from lanistr.config import LanistrConfig
from lanistr.nn import LanistrForSequenceClassification, LanistrModel
from lanistr.viz.weights import (
    BandAttention,
    DenseAttention,
    LowRankAttention,
    SparseAttention,
    block_starts,
    rollout_rows,
)

WORDS = "the a cat dog sat on mat and it was good bad film movie very".split()
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "un", "##believ", "##able", "##s"]


def softmax_rows(shape, seed=0):
    x = np.random.default_rng(seed).normal(size=shape) * 2
    e = np.exp(x)
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


# ------------------------------------------------------------------------------- rollout


def test_rollout_matches_hand_computed_three_token_example():
    # Layer 1: the heads average to [[.5 .5 0] [.5 .5 0] [0 0 1]]; + I, rows / 2:
    #   Â1 = [[.75 .25 0] [.25 .75 0] [0 0 1]]
    layer1 = np.array([[[1, 0, 0], [.5, .5, 0], [0, 0, 1]],
                       [[0, 1, 0], [.5, .5, 0], [0, 0, 1]]], dtype=np.float32)
    # Layer 2: both heads are the anti-diagonal; Â2 = [[.5 0 .5] [0 1 0] [.5 0 .5]]
    anti = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], dtype=np.float32)
    layer2 = np.stack([anti, anti])
    # R = Â2 @ Â1, by hand:
    expected = np.array([[.375, .125, .5], [.25, .75, 0], [.375, .125, .5]])
    np.testing.assert_allclose(viz.rollout([layer1, layer2]), expected, atol=1e-6)
    # Without the residual it is the plain product A2 @ A1.
    plain = np.array([[0, 0, 1], [.5, .5, 0], [.5, .5, 0]])
    np.testing.assert_allclose(viz.rollout([layer1, layer2], residual=False), plain, atol=1e-6)
    # Batched tensors as a model returns them give the same answer for each example.
    batched = [torch.from_numpy(np.stack([a, a])) for a in (layer1, layer2)]
    np.testing.assert_allclose(viz.rollout(batched, index=1), expected, atol=1e-6)


def test_rollout_rows_of_a_block_matrix_are_block_averages_of_the_rollout():
    layers = [DenseAttention(softmax_rows((3, 10, 10), s)) for s in range(3)]
    full = viz.rollout(layers)
    np.testing.assert_allclose(full.sum(-1), np.ones(10), atol=1e-5)
    x = np.zeros((2, 10))
    x[0, :4], x[1, 4:] = 1 / 4, 1 / 6
    np.testing.assert_allclose(rollout_rows(layers, x), x @ full, atol=1e-5)


# ------------------------------------------------------------------------------- word pieces


def test_merge_word_pieces_sums_keys_averages_queries_and_keeps_row_sums():
    tokens = ["[CLS]", "the", "un", "##believ", "##able", "film", "[SEP]"]
    word_ids = [None, 0, 1, 1, 1, 2, None]
    attn = softmax_rows((2, 4, 7, 7))  # (B, H, T, T)
    merged, words = viz.merge_word_pieces(attn, tokens, word_ids)
    assert words == ["[CLS]", "the", "unbelievable", "film", "[SEP]"]
    assert merged.shape == (2, 4, 5, 5)
    np.testing.assert_allclose(merged.sum(-1), np.ones((2, 4, 5)), atol=1e-5)
    # word 2 = pieces 2..4: mean over query pieces of the sum over key pieces
    np.testing.assert_allclose(merged[1, 3, 2, 2], attn[1, 3, 2:5, 2:5].sum(-1).mean(), rtol=1e-5)
    np.testing.assert_allclose(merged[0, 0, 2, 0], attn[0, 0, 2:5, 0].mean(), rtol=1e-5)
    np.testing.assert_allclose(merged[0, 1, 0, 2], attn[0, 1, 0, 2:5].sum(), rtol=1e-5)
    # Without word ids, "##" marks a continuation: the same words.
    again, words2 = viz.merge_word_pieces(attn, tokens)
    assert words2 == words
    np.testing.assert_allclose(again, merged)


def test_word_groups_of_a_pair_do_not_join_words_across_the_separator():
    tokens = ["[CLS]", "a", "cat", "[SEP]", "a", "##s", "[SEP]"]
    starts, words = viz.word_groups(tokens, [None, 0, 1, None, 0, 0, None])
    assert starts.tolist() == [0, 1, 2, 3, 4, 6]
    assert words == ["[CLS]", "a", "cat", "[SEP]", "as", "[SEP]"]


def test_merging_per_layer_attentions_keeps_the_model_form():
    layers = [softmax_rows((1, 2, 5, 5), s) for s in range(2)]
    merged, words = viz.merge_word_pieces(layers, ["[CLS]", "a", "##s", "b", "[SEP]"])
    assert words == ["[CLS]", "as", "b", "[SEP]"]
    assert [m.weights.shape for m in merged] == [(2, 4, 4)] * 2
    np.testing.assert_allclose(merged[0].row_sums(), np.ones((2, 4)), atol=1e-5)


# ------------------------------------------------------------------------------- sparse forms


def _backends_with_weights() -> list[str]:
    from lanistr.nn.attention import list_backends

    return [spec.name for spec in list_backends() if spec.capabilities.returns_weights]


needs_sliding_window = pytest.mark.skipif("sliding_window" not in _backends_with_weights(),
                                          reason="the sliding_window attention backend is not there")

# Small settings so that every sparse backend is really sparse on 30 tokens.
BACKEND_OPTIONS = {"sliding_window": {"window": 3}, "linformer": {"k": 8},
                   "lsh": {"bucket_size": 4, "n_hashes": 2}}
EXPECTED_FORM = {"full": DenseAttention, "sliding_window": BandAttention,
                 "linformer": LowRankAttention, "lsh": SparseAttention}


def tiny_model(backend="full", max_len=64, cls=LanistrModel, **options):
    attention = {"backend": backend, **BACKEND_OPTIONS.get(backend, {}), **options}
    config = LanistrConfig.from_name("tiny", vocab_size=len(VOCAB), max_len=max_len,
                                     attention=attention)
    return cls(config).eval()


def sliding_window_model(window=3, global_tokens=(0,), max_len=64, cls=LanistrModel):
    return tiny_model("sliding_window", max_len, cls, window=window,
                      global_tokens=list(global_tokens))


def dense_reference(attentions, index, n):
    return [DenseAttention((a.densify() if hasattr(a, "densify") else a)[index, :, :n, :n].numpy())
            for a in attentions]


@pytest.mark.parametrize("backend", _backends_with_weights())
def test_every_backend_form_agrees_with_its_densified_weights(backend):
    """Each backend's compact weights give, through every operation the views use, what its
    densify() gives; parametrized over the registry, so a new backend is checked for free."""
    model = tiny_model(backend)
    ids = torch.randint(5, len(VOCAB), (2, 30), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 22:] = 0
    with torch.no_grad():
        out = model(ids, mask, output_attentions=True)
    for index, n in ((0, 30), (1, 22)):
        layers = viz.as_layers(out.attentions, index, n)
        assert type(layers[0]) is EXPECTED_FORM.get(backend, type(layers[0]))
        dense = dense_reference(out.attentions, index, n)
        la, ref = layers[1], dense[1]
        np.testing.assert_allclose(np.nan_to_num(la.window(0, n)), ref.weights, atol=1e-5)
        np.testing.assert_allclose(np.nan_to_num(la.window(5, 17)), ref.weights[:, 5:17, 5:17],
                                   atol=1e-5)
        for q in (0, 9, n - 1):
            np.testing.assert_allclose(np.nan_to_num(la.rows(q)), ref.weights[:, q], atol=1e-5)
        for starts in (block_starts(n, 10), np.array([0, 10, 20]), np.array([0, 1, 2, 5, 9, 13])):
            agg = la.aggregate(starts)
            np.testing.assert_allclose(np.nan_to_num(agg.window(0, agg.length)),
                                       ref.aggregate(starts).weights, atol=1e-5)
        x = np.random.default_rng(0).random((3, n))
        np.testing.assert_allclose(la.left_matmul(x), x @ ref.weights.mean(0), atol=1e-5)
        np.testing.assert_allclose(la.row_sums(), ref.weights.sum(-1), atol=1e-5)
        np.testing.assert_allclose(rollout_rows(layers, np.eye(n)),
                                   rollout_rows(dense, np.eye(n)), atol=1e-5)
        # Only the sparse forms leave cells uncomputed, and those hold 0 in the dense matrix.
        missing = np.isnan(la.window(0, n))
        assert missing.any() == (backend in ("sliding_window", "lsh"))
        assert np.all(ref.weights[missing] == 0)


@needs_sliding_window
@pytest.mark.parametrize("global_tokens", [(0,), (), (0, 9)])
def test_band_form_stays_a_band_through_aggregation(global_tokens):
    model = sliding_window_model(global_tokens=global_tokens)
    ids = torch.randint(5, len(VOCAB), (1, 30), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(ids, output_attentions=True)
    band = viz.as_layers(out.attentions)[1]
    ref = dense_reference(out.attentions, 0, 30)[1]
    assert isinstance(band, BandAttention) and band.band.shape == (4, 30, 7)
    assert np.isnan(band.window(0, 30)[0, 12, 20])  # outside the band: never computed
    # Blocks of 3 stay a (narrower) band; blocks of 10 become a small dense matrix.
    for starts, form in ((block_starts(30, 10), "band"), (np.array([0, 10, 20]), "dense")):
        agg = band.aggregate(starts)
        assert agg.form == form
        np.testing.assert_allclose(np.nan_to_num(agg.window(0, agg.length)),
                                   ref.aggregate(starts).weights, atol=1e-5)


# ------------------------------------------------------------------------------- figures


def png_pixels(path: Path) -> np.ndarray:
    import matplotlib.image

    return matplotlib.image.imread(str(path))


def assert_real_png(path: Path, min_bytes: int = 8000) -> None:
    assert path.is_file(), path
    assert path.stat().st_size > min_bytes, (path, path.stat().st_size)
    px = (png_pixels(path)[..., :3] * 255).astype(np.uint32)
    assert px.std() > 10  # not blank
    colours = np.unique(px[..., 0] << 16 | px[..., 1] << 8 | px[..., 2])
    assert len(colours) > 50  # a colour map, not a flat fill


def test_figures_are_written_with_content(tmp_path):
    tokens = ["[CLS]", *(WORDS * 2)[:18], "[SEP]"]
    layers = [softmax_rows((4, 20, 20), s) for s in range(2)]
    figs = {
        "attention_L01_H02.png": viz.attention_heatmap(layers, tokens, layer=1, head=2),
        "heads_L01.png": viz.heads_heatmap(layers, tokens, layer=1, query=3),
        "grid.png": viz.attention_grid(layers, tokens),
        "rollout.png": viz.rollout_figure(layers, tokens),
    }
    for name, fig in figs.items():
        viz.save_figure(fig, tmp_path / name)
        assert_real_png(tmp_path / name)
    # Tokens label the axes; heads label the rows of the heads view.
    ax = figs["attention_L01_H02.png"].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == tokens
    heads_ax = figs["heads_L01.png"].axes[0]
    assert [t.get_text() for t in heads_ax.get_yticklabels()] == [f"Head {h}" for h in range(4)]
    assert len(figs["grid.png"].axes) == 2 * 4 + 1  # thumbnails + colour bar


def test_heatmaps_of_several_heads_redraw_one_figure_to_the_same_pixels(tmp_path):
    tokens = ["[CLS]", *WORDS[:10], "[SEP]"]
    layers = [softmax_rows((3, 12, 12), s) for s in range(2)]
    for head, fig in viz.attention_heatmaps(layers, tokens, 1, [2, 0]):
        viz.save_figure(fig, tmp_path / f"reused{head}.png")
        viz.save_figure(viz.attention_heatmap(layers, tokens, 1, head), tmp_path / f"new{head}.png")
        np.testing.assert_array_equal(png_pixels(tmp_path / f"reused{head}.png"),
                                      png_pixels(tmp_path / f"new{head}.png"))


def test_long_input_is_drawn_as_blocks_or_a_window():
    t, w = 700, 8
    band = softmax_rows((2, t, 2 * w + 1))
    keys = np.arange(t)[:, None] + np.arange(2 * w + 1)[None, :] - w
    band[:, (keys < 0) | (keys >= t)] = 0
    band /= band.sum(-1, keepdims=True)
    layers = [BandAttention(band, w)]
    tokens = [f"t{i}" for i in range(t)]
    fig = viz.attention_heatmap(layers, tokens, 0, 1)
    ax = fig.axes[0]
    assert ax.images[0].get_array().shape == (140, 140)  # blocks of 5 tokens
    labels = [x.get_text() for x in ax.get_xticklabels()]
    assert 10 <= len(labels) <= 32 and labels[0] == "0 t0" and labels[1].endswith(f"t{int(labels[1].split()[0])}")
    zoom = viz.attention_heatmap(layers, tokens, 0, 1, window=(100, 140)).axes[0]
    assert zoom.images[0].get_array().shape == (40, 40)
    assert [x.get_text() for x in zoom.get_xticklabels()][0] == "t100"


# ------------------------------------------------------------------------------- HTML


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.scripts, self._in, self.tags = {}, None, set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        attrs = dict(attrs)
        if tag == "script":
            self._in = attrs.get("id", "inline")
            self.scripts.setdefault(self._in, "")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in = None

    def handle_data(self, data):
        if self._in:
            self.scripts[self._in] += data


def parse_page(text: str):
    parser = _Collector()
    parser.feed(text)
    parser.close()
    return parser, json.loads(parser.scripts["lanistr-data"])


def decode_bytes(b64: str, lo: float, step: float) -> np.ndarray:
    q = np.frombuffer(base64.b64decode(b64), dtype=np.uint8)
    return np.where(q == 255, np.nan, lo + q * step)


def decode_head(obj: dict, n: int) -> np.ndarray:
    """What the page's decode() does, in Python."""
    lo, step = obj["lo"], obj["step"]
    v = decode_bytes(obj["v"], lo, step)
    if obj["form"] == "dense":
        return v.reshape(n, n)
    m = np.full((n, n), np.nan)
    w = obj["w"]
    for i in range(n):
        for s in range(2 * w + 1):
            j = i + s - w
            if 0 <= j < n and not np.isnan(v[i * (2 * w + 1) + s]):
                m[i, j] = v[i * (2 * w + 1) + s]
    g = obj["g"]
    gc = decode_bytes(obj["gc"], lo, step).reshape(n, len(g))
    gr = decode_bytes(obj["gr"], lo, step).reshape(len(g), n)
    for c, pos in enumerate(g):
        known = ~np.isnan(gc[:, c])
        m[known, pos] = gc[known, c]
        m[pos] = gr[c]
    return m


def test_html_is_self_contained_and_holds_every_layer_and_head():
    tokens = ["[CLS]", "a", "</script>", "<b>", "[SEP]"]
    layers = [softmax_rows((3, 5, 5), s) for s in range(2)]
    page = viz.render_html(layers, tokens, title="t <x>")
    parser, data = parse_page(page)
    assert "http://" not in page and "https://" not in page  # nothing to fetch: works offline
    assert {"select", "canvas"} <= parser.tags
    assert data["tokens"] == tokens and (data["layers"], data["heads"]) == (2, 3)
    assert len(data["attn"]) == 2 and all(len(heads) == 3 for heads in data["attn"])
    for li in range(2):
        for h in range(3):
            head = data["attn"][li][h]
            assert head["lo"] == 0 and head["step"] == pytest.approx(layers[li][h].max() / 254)
            np.testing.assert_allclose(decode_head(head, 5), layers[li][h],
                                       atol=head["step"] / 2 + 1e-7)
    roll = data["rollout"]
    np.testing.assert_allclose(decode_bytes(roll["v"], roll["lo"], roll["step"]).reshape(5, 5),
                               viz.rollout(layers), atol=roll["step"] / 2 + 1e-7)
    # 8 bits relative to each head's range: tiny weights keep their precision.
    _, small = parse_page(viz.render_html([x * 1e-3 for x in layers], tokens))
    np.testing.assert_allclose(decode_head(small["attn"][0][0], 5), layers[0][0] * 1e-3,
                               atol=1e-3 / 254)


@needs_sliding_window
def test_html_stores_a_sliding_window_layer_as_its_band():
    model = sliding_window_model(window=2, global_tokens=(0,))
    ids = torch.randint(5, len(VOCAB), (1, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(ids, output_attentions=True)
    tokens = [f"t{i}" for i in range(40)]
    _, data = parse_page(viz.render_html(out.attentions, tokens, window=(0, 30)))
    head = data["attn"][1][2]
    assert head["form"] == "band" and len(base64.b64decode(head["v"])) == 30 * 5
    assert head["g"] == [0]
    dense = out.attentions[1].densify()[0, 2, :30, :30].numpy()
    got = decode_head(head, 30)
    inside = ~np.isnan(got)
    assert inside.sum() < 30 * 30  # the band and the global row/column, not the square
    np.testing.assert_allclose(got[inside], dense[inside], atol=head["step"] / 2 + 1e-7)
    assert np.all(dense[~inside] == 0)
    assert any("tokens 0–29 of 40" in note for note in data["notes"])


@pytest.mark.parametrize("backend", _backends_with_weights())
def test_html_holds_each_backends_weights_and_what_it_never_computed(backend):
    model = tiny_model(backend)
    ids = torch.randint(5, len(VOCAB), (1, 24), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = model(ids, output_attentions=True)
    tokens = [f"t{i}" for i in range(24)]
    _, data = parse_page(viz.render_html(out.attentions, tokens))
    layer = viz.as_layers(out.attentions)[0]
    for h in range(4):
        head = data["attn"][0][h]
        got, want = decode_head(head, 24), layer.window(0, 24)[h]
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))  # grey = never computed
        known = ~np.isnan(want)
        np.testing.assert_allclose(got[known], want[known], atol=head["step"] / 2 + 1e-6)


CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(n)), None)


def chromium_open(page: Path, fragment: str, shot: Path, profile: Path):
    """Load ``page#fragment`` headless; return (DOM, console lines). Writes a screenshot."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-background-networking", "--disable-component-update", "--no-first-run",
           f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
           "--window-size=1100,900", "--hide-scrollbars", f"--screenshot={shot}", "--dump-dom",
           f"{page.as_uri()}#{fragment}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return proc.stdout, console


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (install it with "
                    "`apt-get install -y chromium`, or `make browser`)")
def test_html_renders_in_headless_chromium_and_follows_the_url_hash(tmp_path):
    layers = [softmax_rows((3, 12, 12), s) for s in range(2)]
    page = tmp_path / "attention.html"
    page.write_text(viz.render_html(layers, ["[CLS]", *WORDS[:10], "[SEP]"]), encoding="utf-8")
    shots = []
    for i, fragment in enumerate(("layer=0&head=0", "layer=1&head=2")):
        shot = tmp_path / f"shot{i}.png"
        dom, console = chromium_open(page, fragment, shot, tmp_path / f"profile{i}")
        body = re.search(r"<body[^>]*>", dom).group(0)
        assert body == '<body data-status="ready">', body  # no data-error: no uncaught error
        assert console == []
        assert shot.is_file() and shot.stat().st_size > 5000
        shots.append(png_pixels(shot))
    assert shots[0].shape == shots[1].shape
    assert np.abs(shots[0] - shots[1]).max() > 0  # another head draws another picture


# ------------------------------------------------------------------------------- CLI


def save_tiny(directory: Path, model) -> Path:
    model.save_pretrained(directory)
    (directory / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return directory


@pytest.fixture
def classifier_dir(tmp_path):
    config = LanistrConfig.from_name("tiny", vocab_size=len(VOCAB), labels=["negative", "positive"])
    return save_tiny(tmp_path / "clf", LanistrForSequenceClassification(config))


def test_cli_writes_named_images_html_and_the_prediction(classifier_dir, tmp_path):
    out = tmp_path / "viz"
    rc = main(["visualize", "--model", str(classifier_dir), "--text", "the cats sat on the mat",
               "--text-pair", "a good film", "--output", str(out), "--layers", "1",
               "--heads", "0,2", "--rollout", "--html", "--words"])
    assert rc == 0
    for name in ("heads_L01.png", "attention_L01_H00.png", "attention_L01_H02.png", "grid.png",
                 "rollout.png"):
        assert_real_png(out / name)
    assert not (out / "attention_L00_H00.png").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["unit"] == "word"
    assert summary["tokens"][:3] == ["[CLS]", "the", "cats"]  # "cat ##s" merged
    assert summary["prediction"]["label"] in ("negative", "positive")
    _, data = parse_page((out / "attention.html").read_text(encoding="utf-8"))
    assert data["tokens"] == summary["tokens"]
    assert summary["prediction"]["label"] in data["title"]


def test_cli_reports_user_errors_in_one_line(classifier_dir, tmp_path, capsys):
    base = ["visualize", "--model", str(classifier_dir), "--text", "a cat",
            "--output", str(tmp_path / "o")]
    assert main([*base, "--query-token", "99"]) == 2
    assert "--query-token 99" in capsys.readouterr().err
    assert main([*base, "--layers", "7"]) == 2
    assert "--layers: 7 does not exist" in capsys.readouterr().err
    assert main([*base, "--max-len", "100000"]) == 2
    assert main(["visualize", "--model", str(tmp_path / "nope"), "--text", "a",
                 "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "Traceback" not in err


@needs_sliding_window
def test_cli_long_sliding_window_input_is_drawn_in_blocks(tmp_path):
    model_dir = save_tiny(tmp_path / "sw", sliding_window_model(window=4, max_len=400))
    out = tmp_path / "viz"
    text = " ".join((WORDS * 30)[:300])
    rc = main(["visualize", "--model", str(model_dir), "--text", text, "--output", str(out),
               "--layers", "0", "--heads", "1", "--max-cells", "50", "--html",
               "--html-max-tokens", "64"])
    assert rc == 0
    assert_real_png(out / "attention_L00_H01.png")
    _, data = parse_page((out / "attention.html").read_text(encoding="utf-8"))
    assert len(data["tokens"]) == 64 and data["total"] == 302
    assert data["attn"][0][1]["form"] == "band"


def test_demo_draws_the_first_spam_mail_of_the_test_file(classifier_dir, tmp_path):
    from lanistr.commands.demo import _attention_picture

    test = tmp_path / "test.jsonl"
    test.write_text("\n".join(json.dumps({"text": t, "label": y}) for t, y in (
        ("a good film", "ham"), ("the cats sat on the mat", "spam"))) + "\n")
    files = _attention_picture(classifier_dir, test, tmp_path / "demo" / "attention")
    assert files == ["attention/heads_L01.png", "attention/rollout.png",
                     "attention/attention.html"]
    summary = json.loads((tmp_path / "demo" / "attention" / "summary.json").read_text())
    assert summary["tokens"][:3] == ["[CLS]", "the", "cats"]  # the spam mail, words merged
    assert_real_png(tmp_path / "demo" / "attention" / "heads_L01.png")
