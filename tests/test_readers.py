"""Readers: happy paths with line numbers, and every error path naming file, line, reason."""

from __future__ import annotations

import pytest

from lanistr.data.fetch import embedded_path
from lanistr.data.readers import (
    Document,
    read_conll,
    read_documents,
    read_lines,
    read_records,
)
from lanistr.errors import DataError


def write(tmp_path, name: str, content: str | bytes):
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8", newline="")
    else:
        path.write_bytes(content)
    return path


# --------------------------------------------------------------------------- documents


def test_documents_are_blank_line_separated_blocks_with_start_lines(tmp_path):
    path = write(tmp_path, "a.txt", "first doc\nstill first  \n\n\n  \nsecond\n\nthird\n")
    assert read_documents(path) == [
        Document("first doc\nstill first", 1),
        Document("second", 6),
        Document("third", 8),
    ]


def test_documents_handle_crlf_bom_and_no_final_newline(tmp_path):
    path = write(tmp_path, "a.txt", b"\xef\xbb\xbfone\r\ntwo\r\n\r\nthree")
    assert read_documents(path) == [Document("one\ntwo", 1), Document("three", 4)]


def test_documents_from_jsonl_use_the_text_field(tmp_path):
    path = write(tmp_path, "a.jsonl", '{"text": "a b"}\n\n{"text": "c", "x": 1}\n')
    assert read_documents(path) == [Document("a b", 1), Document("c", 3)]


# --------------------------------------------------------------------------- records


def test_jsonl_records_keep_all_fields_and_line_numbers(tmp_path):
    path = write(
        tmp_path,
        "r.jsonl",
        '{"text": "hi", "label": "spam", "g": 1}\n\n  \n{"text": "yo", "label": 0}\n',
    )
    records = read_records(path, ["text", "label"])
    assert [(r.values, r.line) for r in records] == [
        ({"text": "hi", "label": "spam", "g": 1}, 1),
        ({"text": "yo", "label": 0}, 4),
    ]
    assert records[1]["label"] == 0 and records[0].path == str(path)


def test_jsonl_missing_field_names_file_line_and_field(tmp_path):
    path = write(tmp_path, "r.jsonl", '{"text": "a", "label": "x"}\n{"text": "b"}\n')
    with pytest.raises(
        DataError, match=r"r\.jsonl:2: missing field 'label' \(found: text\)"
    ) as exc:
        read_records(path, ["text", "label"])
    assert (exc.value.line, exc.value.path) == (2, str(path))


def test_jsonl_malformed_line_gives_line_and_json_reason(tmp_path):
    path = write(tmp_path, "r.jsonl", '{"text": "a"}\n{"text": "b",}\n')
    with pytest.raises(
        DataError, match=r"r\.jsonl:2: malformed JSON: Expecting property name.*\(column 14\)"
    ):
        read_records(path, ["text"])


@pytest.mark.parametrize(
    "line, message",
    [("[1, 2]", "expected a JSON object, found list"), ('{"text": null}', "field 'text' is null")],
)
def test_jsonl_non_object_or_null_field(tmp_path, line, message):
    path = write(tmp_path, "r.jsonl", line + "\n")
    with pytest.raises(DataError, match=rf":1: {message}"):
        read_records(path, ["text"])


def test_csv_records_with_quoted_multiline_field_keep_start_lines(tmp_path):
    path = write(tmp_path, "r.csv", 'text,label\n"two\nlines, one field",pos\n\nplain,neg\n')
    records = read_records(path, ["text", "label"])
    assert [(r["text"], r["label"], r.line) for r in records] == [
        ("two\nlines, one field", "pos", 2),
        ("plain", "neg", 5),
    ]


def test_tsv_uses_tabs(tmp_path):
    path = write(tmp_path, "r.tsv", "label\ttext\nham\ta, b, c\n")
    assert read_records(path, "text")[0].values == {"label": "ham", "text": "a, b, c"}


def test_csv_missing_column_is_reported_once_for_the_header(tmp_path):
    path = write(tmp_path, "r.csv", "text,lable\na,b\nc,d\n")
    with pytest.raises(
        DataError, match=r"r\.csv:1: missing column 'label' in the header \(found: text, lable\)"
    ):
        read_records(path, ["text", "label"])


def test_csv_wrong_column_count_and_bad_quoting(tmp_path):
    path = write(tmp_path, "r.csv", "text,label\na,b\nc\n")
    with pytest.raises(
        DataError, match=r"r\.csv:3: expected 2 CSV columns as in the header, found 1"
    ):
        read_records(path, ["text"])
    path = write(tmp_path, "q.csv", 'text,label\na,b\n"c"x,d\n')
    with pytest.raises(DataError, match=r"q\.csv:3: malformed CSV"):
        read_records(path, ["text"])


def test_records_reject_unknown_extension(tmp_path):
    path = write(tmp_path, "r.json", "{}")
    with pytest.raises(
        DataError, match="unsupported extension '.json': expected .jsonl, .csv or .tsv"
    ):
        read_records(path, ["text"])


def test_csv_header_only_is_empty(tmp_path):
    with pytest.raises(DataError, match="empty file, no records"):
        read_records(write(tmp_path, "r.csv", "text,label\n"), ["text"])


# --------------------------------------------------------------------------- conll


def test_conll_tabs_spaces_comments_and_docstart(tmp_path):
    content = (
        "-DOCSTART- -X- O O\n\n"
        "# doc: ca01 genre: news\n"
        "The\tDET\ndog  NN  B-NP  NOUN\n\n\n"
        "#\tSYM\n"
        "-DOCSTART-\n"
        "Hi\tUH\n"
    )
    sentences = read_conll(write(tmp_path, "a.conll", content))
    assert [(s.words, s.tags, s.line) for s in sentences] == [
        (["The", "dog"], ["DET", "NOUN"], 4),
        (["#"], ["SYM"], 8),
        (["Hi"], ["UH"], 10),
    ]


def test_conll_one_column_line_is_malformed(tmp_path):
    path = write(tmp_path, "a.conll", "The\tDET\ndog\n")
    with pytest.raises(DataError, match=r"a\.conll:2: expected 'word<TAB>tag' .* found 'dog'"):
        read_conll(path)


def test_conll_only_comments_is_empty(tmp_path):
    with pytest.raises(DataError, match="empty file, no records"):
        read_conll(write(tmp_path, "a.conll", "# nothing\n-DOCSTART- O\n\n"))


# --------------------------------------------------------------------------- lines


def test_lines_skip_blank_lines_and_trailing_space(tmp_path):
    assert read_lines(write(tmp_path, "in.txt", "a b \n\n  \n c\r\n")) == ["a b", " c"]


# --------------------------------------------------------------------------- shared errors

READERS = {
    "documents": ("x.txt", read_documents),
    "records-jsonl": ("x.jsonl", lambda p: read_records(p, ["text"])),
    "records-csv": ("x.csv", lambda p: read_records(p, ["text"])),
    "records-tsv": ("x.tsv", lambda p: read_records(p, ["text"])),
    "conll": ("x.conll", read_conll),
    "lines": ("x.txt", read_lines),
}
VALID = {
    "x.txt": "text\nline two\n",
    "x.jsonl": '{"text": "a"}\n{"text": "b"}\n',
    "x.csv": "text\na\nb\n",
    "x.tsv": "text\na\nb\n",
    "x.conll": "a\tX\nb\tY\n",
}


@pytest.mark.parametrize("reader", READERS)
def test_missing_file(tmp_path, reader):
    name, fn = READERS[reader]
    with pytest.raises(DataError, match=r"x\.\w+: no such file$"):
        fn(tmp_path / name)


@pytest.mark.parametrize("reader", READERS)
def test_non_utf8_names_line_and_byte_offset(tmp_path, reader):
    name, fn = READERS[reader]
    good = VALID[name].encode()
    bad = good + b"caf\xe9\n"  # a Latin-1 e-acute on the line after the valid ones
    line, offset = good.count(b"\n") + 1, len(good) + 3
    with pytest.raises(
        DataError, match=rf":{line}: not valid UTF-8 \(byte 0xe9 at byte offset {offset}\)"
    ):
        fn(write(tmp_path, name, bad))


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_file(tmp_path, reader, content):
    name, fn = READERS[reader]
    with pytest.raises(DataError, match=r"x\.\w+: empty file, no records$"):
        fn(write(tmp_path, name, content))


@pytest.mark.parametrize("reader", READERS)
def test_valid_inputs_read(tmp_path, reader):
    name, fn = READERS[reader]
    assert len(fn(write(tmp_path, name, VALID[name]))) >= 1


def test_directory_is_not_a_file(tmp_path):
    with pytest.raises(DataError, match="is a directory"):
        read_lines(tmp_path)


# --------------------------------------------------------------------------- embedded sample


def test_embedded_sample_reads_cleanly():
    docs = read_documents(embedded_path("sotu_sample.txt"))
    assert len(docs) >= 30 and all("\n\n" not in d.text for d in docs)
    train = read_records(embedded_path("spam_train.jsonl"), ["text", "label"])
    test = read_records(embedded_path("spam_test.jsonl"), ["text", "label"])
    assert (len(train), len(test)) == (1200, 400)
    for records in (train, test):
        assert {r["label"] for r in records} == {"spam", "ham"}
        assert all(0 < len(r["text"]) <= 1500 for r in records)
    assert {r["group"] for r in train} <= {"easy-ham-1", "hard-ham-1", "spam-1"}
    assert {r["group"] for r in test} <= {"easy-ham-2", "spam-2"}
