"""Cased, exactly spaced text as token ids of an uncased WordPiece vocabulary.

A seq2seq target such as ``The U.S. Congress, 1,000 strong.`` cannot be produced by a
lower-casing tokenizer, and ``Tokenizer.decode`` puts a space around every punctuation mark
(``u . s . congress , 1 , 000``). :class:`Markup` writes a text as *units* (runs of letters
and digits, or one other character each), lower-cased, with four marker tokens in front of a
unit where needed::

    [CAP]    the unit starts with a capital       (The, I, Congress)
    [UPPER]  the unit is all capitals             (NATO, USA)
    [JOIN]   no space before it, against the rule (the S of U.S., the 000 of 1,000)
    [SPACE]  a space before it, against the rule  (an opening quote after a closing one)

The spacing rule (:func:`default_space`) is English typography: no space before closing
punctuation (``. , ; : ! ? % ) ] }`` and apostrophes), none after opening punctuation
(``( [ { $``), none around a hyphen or a slash (``20-year``, ``and/or``; a dash written
``--`` takes one ``[SPACE]`` and is followed by a space), none inside a contraction
(``nation's``), an abbreviation (``U.S.``) or a number (``1,000``, ``3.5``); straight double
quotes alternate between opening and closing. A marker is only needed where the rule is
wrong, so most targets carry a few ``[CAP]`` and nothing else.

``decode(encode(text)) == text`` for whitespace-normalised text except where the tokenizer
itself loses information: accents it strips, characters outside its vocabulary (``[UNK]``)
and mixed-case words (``McCain`` comes back as ``Mccain``).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

CAP, UPPER, JOIN, SPACE = "[CAP]", "[UPPER]", "[JOIN]", "[SPACE]"
MARKERS = (CAP, UPPER, JOIN, SPACE)

_UNIT = re.compile(r"[^\W_]+|\S")
CLOSING = set(".,;:!?%)]}'’”")
OPENING = set("([{$“")
_HYPHENS = set("-‑/")  # glued on both sides: 20-year, and/or
_JOINERS = set("-‑'’/")  # glue the next unit to the previous one when themselves glued
_NUMBER_SEPARATORS = set(".,:")


def units(text: str) -> list[tuple[str, bool]]:
    """``(unit, space_before)`` pairs; the first unit never has a space before it."""
    out = []
    end = 0
    for m in _UNIT.finditer(text):
        out.append((m.group(), bool(out) and m.start() > end))
        end = m.end()
    return out


def default_space(prev: Sequence[tuple[str, bool]], unit: str, quotes_open: bool) -> bool:
    """Whether ``unit`` takes a space before it after the units ``prev`` (with their actual
    spacing), when no marker says otherwise. ``quotes_open``: an odd number of ``"`` so far."""
    if not prev:
        return False
    p, p_space = prev[-1]
    if unit == '"':
        return not quotes_open  # an opening quote takes a space, a closing one does not
    if len(prev) >= 2 and p in "-‑" and prev[-2][0] == p:
        return True  # after a dash written as two hyphens
    if unit in CLOSING or unit in _HYPHENS or p in OPENING or (p == '"' and quotes_open):
        return False
    if unit == p and not unit.isalnum():
        return False  # repeated punctuation: ..., ___
    if p in _JOINERS and not p_space and len(prev) >= 2 and unit.isalnum():
        return False  # 20-year, nation's, and/or
    if p in _NUMBER_SEPARATORS and not p_space and len(prev) >= 2:
        pp = prev[-2][0]
        if (pp.isdigit() and unit.isdigit()) or (len(pp) == 1 and pp.isalpha()
                                                 and len(unit) == 1 and unit.isalpha()):
            return False  # 1,000 / 3.5 / 10:30 / U.S.
    return True


def case_marker(unit: str) -> str | None:
    if not any(c.isupper() for c in unit):
        return None
    if unit[0].isupper() and (len(unit) == 1 or not any(c.isupper() for c in unit[1:])):
        return CAP
    if len(unit) > 1 and not any(c.islower() for c in unit):
        return UPPER
    return CAP if unit[0].isupper() else None  # mixed case (McCain, eBay) is not kept


def apply_case(unit: str, marker: str | None) -> str:
    if marker == UPPER:
        return unit.upper()
    if marker == CAP:
        return unit[:1].upper() + unit[1:]
    return unit


def to_markup(text: str) -> list[list[str]]:
    """Per unit: its markers followed by the lower-cased unit (a list of words to tokenize)."""
    out: list[list[str]] = []
    seen: list[tuple[str, bool]] = []
    quotes = 0
    for unit, space in units(text):
        words = []
        if seen and space != default_space(seen, unit, quotes % 2 == 1):
            words.append(SPACE if space else JOIN)
        marker = case_marker(unit)
        if marker is not None:
            words.append(marker)
        words.append(unit.lower())
        out.append(words)
        seen.append((unit, space))
        quotes += unit == '"'
    return out


def from_units(pieces: Sequence[tuple[str, str | None, bool | None]]) -> str:
    """Text of ``(lower-cased unit, case marker, explicit spacing or None)`` triples."""
    seen: list[tuple[str, bool]] = []
    text = []
    quotes = 0
    for unit, case, space in pieces:
        if space is None:
            space = default_space(seen, unit, quotes % 2 == 1)
        space = space and bool(seen)
        text.append((" " if space else "") + apply_case(unit, case))
        seen.append((unit, space))
        quotes += unit == '"'
    return "".join(text)


class Markup:
    """Encode texts to marked-up token ids and decode ids back to text, for one tokenizer.

    The tokenizer must contain the four marker tokens (:func:`add_markers` adds them).
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        ids = {m: tokenizer.backend.token_to_id(m) for m in MARKERS}
        missing = [m for m, i in ids.items() if i is None]
        if missing:
            from lanistr.errors import LanistrError

            raise LanistrError(f"{tokenizer.source}: the tokenizer has no {' '.join(missing)} "
                               "token(s); call lanistr.data.markup.add_markers first")
        self.marker_ids = ids
        self.marker_of = {i: m for m, i in ids.items()}
        self.specials = set(tokenizer.special_ids.all)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids (no [CLS]/[SEP]) of each text."""
        words = [[w for unit in to_markup(t) for w in unit] for t in texts]
        words = [w if w else [""] for w in words]
        encodings = self.tokenizer.backend.encode_batch(words, is_pretokenized=True,
                                                        add_special_tokens=False)
        return [list(e.ids) for e in encodings]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ids; stops at nothing (strip [SEP] and padding before calling)."""
        pieces: list[tuple[str, str | None, bool | None]] = []
        case = space = None
        current: list[str] | None = None

        def flush():
            nonlocal current
            if current is not None:
                pieces[-1] = (_join_pieces(current), pieces[-1][1], pieces[-1][2])
            current = None

        for i in ids:
            i = int(i)
            marker = self.marker_of.get(i)
            if marker is not None:
                flush()
                if marker in (CAP, UPPER):
                    case = marker
                else:
                    space = marker == SPACE
                continue
            if i in self.specials and i != self.tokenizer.unk_id:
                continue
            token = self.tokenizer.backend.id_to_token(i)
            if token is None:
                continue
            if token.startswith("##") and current is not None:
                current.append(token[2:])
                continue
            flush()
            current = [token[2:] if token.startswith("##") else token]
            pieces.append(("", case, space))
            case = space = None
        flush()
        return from_units(pieces)


def _join_pieces(pieces: list[str]) -> str:
    return "".join(pieces)


def add_markers(tokenizer) -> int:
    """Add the four marker tokens to ``tokenizer`` (in place) if missing; return how many."""
    missing = [m for m in MARKERS if tokenizer.backend.token_to_id(m) is None]
    if missing:
        tokenizer.backend.add_special_tokens(missing)
    return len(missing)


def normalize(text: str) -> str:
    """Whitespace-normalised text (what :class:`Markup` reproduces)."""
    return " ".join(text.split())


def strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text)
                   if unicodedata.category(c) != "Mn")
