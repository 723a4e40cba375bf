"""Cutting token sequences longer than the model allows into overlapping windows."""

from __future__ import annotations


def window_starts(n: int, body: int, stride: int) -> list[int]:
    """Start offsets of windows of ``body`` tokens, ``stride`` apart, covering ``n`` tokens;
    the last window is aligned to the end so no window is mostly empty."""
    if n <= body:
        return [0]
    starts = list(range(0, n - body, stride))
    starts.append(n - body)
    return starts


def split_into_segments(ids: list[int], segment_len: int, stride: int, max_segments: int,
                        cls_id: int, sep_id: int) -> tuple[list[list[int]], bool]:
    """``[CLS] piece [SEP]`` segments of at most ``segment_len`` tokens, overlapping by
    ``segment_len - 2 - stride``. Returns the segments and whether the document was cut
    (more than ``max_segments`` windows were needed)."""
    body = segment_len - 2
    starts = window_starts(len(ids), body, stride)
    cut = len(starts) > max_segments
    return [[cls_id, *ids[s:s + body], sep_id] for s in starts[:max_segments]], cut
