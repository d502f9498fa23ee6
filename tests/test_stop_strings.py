"""Stop strings across token boundaries: never emitted, nothing else withheld."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from radixserve.stop_strings import StopStrings


def run(deltas, stops):
    m = StopStrings(stops)
    out = "".join(m.push(d) for d in deltas)
    return out + m.flush(), m


def test_split_stop_string_is_caught_and_dropped():
    out, m = run(["Hello <", "|e", "nd|> tail"], ["<|end|>"])
    assert out == "Hello " and m.stopped and m.matched == "<|end|>"


def test_a_false_start_is_released():
    out, m = run(["a <", "|x", "y"], ["<|end|>"])
    assert out == "a <|xy" and not m.stopped


def test_earliest_of_several_stop_strings_wins():
    out, m = run(["one two three"], ["three", "two"])
    assert out == "one " and m.matched == "two"


def test_bad_stop_strings_are_refused():
    with pytest.raises(ValueError, match="non-empty"):
        StopStrings([""])


@given(text=st.text(alphabet="ab<|>", max_size=40), stop=st.text(alphabet="ab<|>", min_size=1, max_size=4),
       cuts=st.lists(st.integers(0, 40), max_size=8))
def test_streamed_output_equals_text_cut_at_first_stop(text, stop, cuts):
    bounds = sorted({0, len(text), *[c for c in cuts if c <= len(text)]})
    deltas = [text[a:b] for a, b in zip(bounds, bounds[1:])]
    out, m = run(deltas, [stop])
    i = text.find(stop)
    assert out == (text[:i] if i >= 0 else text)
    assert m.stopped == (i >= 0)
