"""The shortcuts a first verification of a long lifecycle takes must decide exactly as the
paths they skip: the decoding-cost check of a small JSON input, and the headers of a commit
read without a pass over its signature's lines."""

from __future__ import annotations

import pytest

from uniflow._bounded import CONTAINER_COST, ELEMENT_COST, RATIO, SLACK, check_cost, json_cost, load_json
from uniflow._errors import IntegrityError, UniflowError
from uniflow._records.signedchain import _headers

# the longest input the cost check passes without counting (every byte a bracket and a separator)
_SHORT = SLACK // ((CONTAINER_COST + 3 * ELEMENT_COST + 1) - RATIO)


@pytest.mark.parametrize("fill", [b"[", b",", b":", b"{"])
@pytest.mark.parametrize("size", [1, _SHORT - 1, _SHORT, _SHORT + 1, 2 * _SHORT, 20 * _SHORT])
def test_the_cost_check_refuses_exactly_what_the_count_refuses(fill: bytes, size: int) -> None:
    data = fill * size
    over = json_cost(data) > RATIO * len(data) + SLACK
    if over:
        with pytest.raises(UniflowError, match="would take more than"):
            check_cost(data, "x")
    else:
        check_cost(data, "x")
    assert over or size < 20 * _SHORT  # the largest ones are refused, by the count


def test_a_bracket_bomb_is_still_refused_before_it_is_decoded() -> None:
    with pytest.raises(UniflowError, match="would take more than"):
        load_json(b"[" * 200_000, "event.json", limit=1 << 22)
    with pytest.raises(IntegrityError, match="not valid JSON"):
        load_json(b"[" * 1000, "event.json", limit=1 << 22)  # small: decoded, and refused as JSON


def _reference(raw: bytes) -> dict[bytes, bytes]:
    """The headers as a pass over every line reads them (what :func:`_headers` was)."""
    out: dict[bytes, bytes] = {}
    for line in raw.split(b"\n"):
        if not line:
            break
        name, _, value = line.partition(b" ")
        if line[:1] != b" ":
            out.setdefault(name, value)
    return out


SIGNED = (
    b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nparent 1111111111111111111111111111111111111111\n"
    b"author A <a@x> 1700000000 +0000\ncommitter C <c@x> 1700000001 +0000\n"
    b"gpgsig -----BEGIN SSH SIGNATURE-----\n U1NIU0lH\n tree 2222222222222222222222222222222222222222\n"
    b" -----END SSH SIGNATURE-----\n\nsubject\n\ntree 3333333333333333333333333333333333333333\n"
)


@pytest.mark.parametrize(
    "raw",
    [
        SIGNED,
        SIGNED.replace(b"\n\nsubject", b"\nsubject"),  # no message: the headers run to the end
        b"\ntree 1\n",  # a blank first line: no headers
        b"tree\nparent\ntree x\n\n",  # a header without a value comes first
        b"tree a\ntree b\nparent p\n\nmsg",  # the first of a repeated header counts
        b"tree a\nparent p",  # no newline at the end
        b"",
    ],
)
def test_headers_read_as_a_pass_over_every_line_reads_them(raw: bytes) -> None:
    assert _headers(raw) == {k: v for k, v in _reference(raw).items() if k}
