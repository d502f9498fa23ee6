"""The socket protocol's framing and codec, without a server: round trips,
frames split anywhere, oversized frames skipped in step, and every decoding
failure a WireError with the right code, field and id."""
from __future__ import annotations

import struct

import msgpack
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from radixserve.wire import codec, messages as m
from radixserve.wire.errors import Code, WireError
from radixserve.wire.framing import FrameDecoder, Oversized, pack


def frame(obj) -> bytes:
    return pack(obj)


def test_round_trip_every_request():
    msgs = [m.Hello(id=1, version=1, api_key="k"), m.Ping(id="p"), m.Cancel(id=3),
            m.Generate(id=2, prompt="hi", max_tokens=3, stop=["x"], logit_bias={5: -1.0}, ids_only=True),
            m.Generate(id=4, messages=[{"role": "user", "content": "q"}]),
            m.Tokenize(id=5, text="t", add_special=True), m.Detokenize(id=6, ids=[1, 2]),
            m.GetSystemPrompt(id=7), m.SetSystemPrompt(id=8, content="s"), m.Stats(id=9)]
    dec = FrameDecoder()
    bodies = dec.feed(b"".join(codec.encode(x) for x in msgs))
    assert [codec.decode(b) for b in bodies] == msgs


@given(st.lists(st.integers(0, 40), min_size=1, max_size=8), st.data())
def test_frames_split_anywhere(sizes, data):
    objs = [{"type": "ping", "id": i, "pad": "x" * n} for i, n in enumerate(sizes)]
    stream = b"".join(frame(o) for o in objs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    dec, out, prev = FrameDecoder(), [], 0
    for c in cuts + [len(stream)]:
        out += dec.feed(stream[prev:c])
        prev = c
    assert [msgpack.unpackb(b) for b in out] == objs and not dec.mid_frame


def test_oversized_frame_is_skipped_in_step():
    dec = FrameDecoder(max_bytes=16)
    big = struct.pack(">I", 100) + b"z" * 100
    ok = frame({"type": "ping", "id": 1})
    out = dec.feed(big[:50]) + dec.feed(big[50:] + ok)
    assert out[0] == Oversized(100) and msgpack.unpackb(out[1]) == {"type": "ping", "id": 1}


def test_typed_token_arrays():
    ids = np.array([3, 0, 70000], dtype="<u4")
    body = msgpack.packb({"type": "detokenize", "id": 1, "ids": {"dtype": "<u4", "data": ids.tobytes()}})
    assert codec.decode(body).ids == [3, 0, 70000]


@pytest.mark.parametrize("obj, code, field, rid", [
    ([1, 2], Code.INVALID_MESSAGE, None, None),
    ({"id": 1}, Code.MISSING_FIELD, "type", 1),
    ({"type": 5, "id": 1}, Code.INVALID_TYPE, "type", 1),
    ({"type": "fly", "id": "a"}, Code.UNKNOWN_TYPE, "type", "a"),
    ({"type": "ping"}, Code.MISSING_FIELD, "id", None),
    ({"type": "ping", "id": -1}, Code.INVALID_VALUE, "id", None),
    ({"type": "ping", "id": 1.5}, Code.INVALID_TYPE, "id", None),
    ({"type": "ping", "id": 1, "extra": 0}, Code.UNKNOWN_FIELD, "extra", 1),
    ({"type": "tokenize", "id": 2}, Code.MISSING_FIELD, "text", 2),
    ({"type": "tokenize", "id": 2, "text": b"raw"}, Code.INVALID_TYPE, "text", 2),
    ({"type": "generate", "id": 3, "prompt": 7}, Code.INVALID_TYPE, "prompt", 3),
    ({"type": "generate", "id": 3, "prompt": [1, True]}, Code.INVALID_TYPE, "prompt[1]", 3),
    ({"type": "generate", "id": 3, "prompt": "x", "max_tokens": "9"}, Code.INVALID_TYPE, "max_tokens", 3),
    ({"type": "generate", "id": 3, "prompt": "x", "n": 0}, Code.INVALID_VALUE, "n", 3),
    ({"type": "generate", "id": 3, "prompt": "x", "temperature": float("nan")}, Code.INVALID_TYPE, "temperature", 3),
    ({"type": "generate", "id": 3, "prompt": "x", "stop": ["a", 1]}, Code.INVALID_TYPE, "stop[1]", 3),
    ({"type": "generate", "id": 3, "prompt": "x", "logit_bias": {"a": 1}}, Code.INVALID_TYPE, "logit_bias", 3),
    ({"type": "generate", "id": 3, "messages": [{"role": "user"}]}, Code.INVALID_TYPE, "messages[0].content", 3),
    ({"type": "detokenize", "id": 4, "ids": {"dtype": "<f4", "data": b"\0" * 4}}, Code.INVALID_VALUE, "ids.dtype", 4),
    ({"type": "detokenize", "id": 4, "ids": {"dtype": "<i4", "data": b"\0" * 3}}, Code.INVALID_VALUE, "ids.data", 4),
])
def test_decode_errors_name_the_field(obj, code, field, rid):
    with pytest.raises(WireError) as e:
        codec.decode(msgpack.packb(obj))
    assert (e.value.code, e.value.field, e.value.id) == (code, field, rid), e.value.message


@given(st.binary(max_size=64))
def test_garbage_bodies_raise_only_wire_errors(body):
    try:
        codec.decode(body)
    except WireError as e:
        assert e.code in (Code.BAD_MSGPACK, Code.INVALID_MESSAGE, Code.MISSING_FIELD, Code.INVALID_TYPE,
                          Code.UNKNOWN_TYPE)
