"""Chunk planner, stream grouping and the one stitcher: coverage, overlap and size rules for many lengths; exact
reconstruction; segment spans and their cross-fade."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genprop_cli.chunking import (
    Segment,
    Stitcher,
    blend_arrays,
    blend_halves,
    chunk_windows,
    crossfade_weights,
    plan_chunks,
    segment_spans,
)

lengths = st.integers(min_value=1, max_value=700)
chunks = st.sampled_from([32, 64, 128])


@st.composite
def plans(draw):
    chunk = draw(chunks)
    return draw(lengths), chunk, draw(st.integers(min_value=1, max_value=chunk - 1))


@settings(max_examples=300, deadline=None)
@given(plans())
def test_plan_covers_every_frame_with_the_asked_overlap(plan):
    n, chunk, overlap = plan
    spans = plan_chunks(n, chunk, overlap)
    assert spans[0].start == 0 and spans[0].shared == 0 and spans[-1].stop == n
    covered = np.zeros(n, int)
    for k, s in enumerate(spans):
        assert s.index == k and 1 <= s.length <= chunk
        covered[s.start : s.stop] += 1
        if k < len(spans) - 1:
            assert s.length == chunk, "only the last chunk may be shorter"
        if k > 0:
            prev = spans[k - 1]
            assert s.start == prev.start + chunk - overlap
            assert s.shared == prev.stop - s.start == overlap
            assert s.stop > prev.stop, "every chunk adds new frames"
    assert covered.min() >= 1
    assert covered.max() <= 1 + -(-chunk // (chunk - overlap))


@pytest.mark.parametrize("n", [1, 5, 31, 32])
def test_a_clip_shorter_than_one_chunk_is_one_short_chunk(n):
    assert [(s.start, s.stop) for s in plan_chunks(n, 32, 8)] == [(0, n)]


def test_last_chunk_shorter_than_the_others():
    spans = plan_chunks(100, 32, 8)
    assert [(s.start, s.stop) for s in spans] == [(0, 32), (24, 56), (48, 80), (72, 100)]


@pytest.mark.parametrize("bad", [(0, 32, 8), (10, 32, 0), (10, 32, 32)])
def test_plan_rejects_bad_arguments(bad):
    with pytest.raises(ValueError):
        plan_chunks(*bad)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 127))
def test_crossfade_weights_rise_strictly_inside_0_1(shared):
    w = crossfade_weights(shared)
    assert w.shape == (shared,) and (w > 0).all() and (w < 1).all() and (np.diff(w) > 0).all()


def stitch(n, chunk, overlap, make_chunk):
    """(index, rgb, mask) of every stitched frame, chunks made by `make_chunk(span)`."""
    spans = plan_chunks(n, chunk, overlap)
    stitcher, out = Stitcher(blend_arrays), []
    for s in spans:
        rgb, mask = make_chunk(s)
        pieces = zip(range(s.start, s.stop), rgb, mask)
        out += list(stitcher.push(s, (tuple(np.float32(x) for x in p) for p in pieces), hold=0 if s is spans[-1] else overlap))
    return [Frame(*f) for f in out]


class Frame:
    def __init__(self, index, rgb, mask):
        self.index, self.rgb, self.mask = int(round(float(index))), rgb, mask


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 400), st.sampled_from([32, 64, 128]), st.data())
def test_streaming_windows_hold_each_chunks_items_and_mark_the_last(n, chunk, data):
    overlap = data.draw(st.integers(1, chunk - 1))
    got = list(chunk_windows(iter(range(n)), chunk, overlap))
    assert [span for span, _, _ in got] == plan_chunks(n, chunk, overlap)
    for span, items, _ in got:
        assert items == list(range(span.start, span.stop))
    assert [last for *_, last in got] == [False] * (len(got) - 1) + [True]


@settings(max_examples=100, deadline=None)
@given(plans())
def test_stitching_identical_chunks_reproduces_the_clip_exactly_in_order(plan):
    n, chunk, overlap = plan
    n = min(n, 300)
    clip = np.random.default_rng(n).random((n, 2, 3, 3), dtype=np.float32)
    masks = clip[..., 0]
    out = stitch(n, chunk, overlap, lambda s: (clip[s.start : s.stop], masks[s.start : s.stop]))
    assert [f.index for f in out] == list(range(n))  # the blended index of identical frames is the index
    np.testing.assert_allclose(np.stack([f.rgb for f in out]), clip, atol=1e-6)
    np.testing.assert_allclose(np.stack([f.mask for f in out]), masks, atol=1e-6)


def test_overlap_is_cross_faded_not_cut():
    # Chunk k outputs the constant k: shared frames must move monotonically from k-1 to k.
    out = stitch(56, 32, 8, lambda s: (np.full((s.length, 1, 1, 3), float(s.index), np.float32), np.zeros((s.length, 1, 1), np.float32)))
    values = np.array([f.rgb[0, 0, 0] for f in out])
    shared = values[24:32]
    assert (values[:24] == 0).all() and (values[32:] == 1).all()
    assert (np.diff(shared) > 0).all() and (shared > 0).all() and (shared < 1).all()


def test_stitcher_holds_only_the_overlap():
    spans = plan_chunks(200, 32, 8)
    stitcher = Stitcher(blend_arrays)
    for s in spans:
        list(stitcher.push(s, [(np.zeros(3, np.float32),)] * s.length, hold=0 if s is spans[-1] else 8))
        assert len(stitcher._held) == (0 if s is spans[-1] else 8)


def test_stitcher_refuses_a_chunk_that_does_not_continue():
    spans = plan_chunks(100, 32, 8)
    stitcher = Stitcher(blend_arrays)
    list(stitcher.push(spans[0], [(np.zeros(3, np.float32),)] * 32, hold=8))
    with pytest.raises(ValueError, match="does not continue"):
        list(stitcher.push(spans[2], [(np.zeros(3, np.float32),)] * 32, hold=8))


def test_a_last_piece_longer_than_planned_passes_its_extra_frames_through():
    # The plain run reads to the end of the stream, which may hold more frames than the probe counted.
    stitcher = Stitcher(blend_arrays)
    spans = plan_chunks(10, 32, 8)
    out = list(stitcher.push(spans[0], [(np.full(1, i, np.float32),) for i in range(12)], hold=0))
    assert [float(f[0][0]) for f in out] == list(range(12)) and not stitcher._held


def test_neighbouring_segments_share_twice_their_half_and_are_cross_faded_with_the_chunk_ramp():
    segments = [Segment(0, 5, 0, 18), Segment(1, 30, 18, 40)]
    halves = blend_halves(segments, overlap=8)
    spans = segment_spans(segments, halves)
    assert halves == [4, 0] and [(s.start, s.stop, s.shared) for s in spans] == [(0, 22, 0), (14, 40, 8)]
    stitcher = Stitcher(blend_arrays)
    out = list(stitcher.push(spans[0], [(np.zeros(1),)] * spans[0].length, hold=spans[1].shared))
    out += list(stitcher.push(spans[1], [(np.full(1, 200.0),)] * spans[1].length, hold=0))
    values = [float(f[0][0]) for f in out]
    assert len(values) == 40 and values[:14] == [0] * 14 and values[22:] == [200] * 18
    np.testing.assert_allclose(values[14:22], 200 * crossfade_weights(8), rtol=1e-6)
