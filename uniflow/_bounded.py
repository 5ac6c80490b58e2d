"""Decoders of untrusted bytes whose memory cost is bounded before anything is built.

A manifest, a lifecycle state or event, a remote's config or a tensor file's header comes
from whoever wrote the repository. Its length is bounded by the caller, but length alone
does not bound what decoding costs: one byte of msgpack (``0x90``) or three of JSON
(``[],``) become a Python list of 64 bytes, so 20 MiB of nested empty arrays cost more
than a GiB. Each decoder here first walks or counts the raw bytes, without building any
object, and estimates what decoding would cost (:data:`CONTAINER_COST` per map or list,
:data:`ELEMENT_COST` per element, plus the payload bytes); it refuses the input when the
estimate is above ``ratio`` times its length plus :data:`SLACK`, or when it nests deeper
than ``max_depth``. Only then is it decoded, with msgpack's own per-container caps. So the
peak memory of a decode is at most about ``ratio`` times the bytes allowed in.

Every failure is an :class:`IntegrityError` (one line, naming ``what``), never another
exception.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

import msgpack

from ._errors import IntegrityError

__all__ = [
    "CONTAINER_COST",
    "ELEMENT_COST",
    "MAX_DEPTH",
    "RATIO",
    "SLACK",
    "check_cost",
    "json_cost",
    "load_json",
    "load_msgpack",
    "msgpack_cost",
]

#: the estimated bytes of one decoded list or dict (CPython: an empty list is 56, a dict 64)
CONTAINER_COST = 72
#: the estimated bytes of one element: its slot in the container and a small scalar object
ELEMENT_COST = 56
#: the default bound on the estimated cost, as a multiple of the input's length
RATIO = 16
#: what any input may cost on top of ``ratio`` times its length (small inputs)
SLACK = 1 << 20
#: the deepest nesting accepted (a manifest needs about 40: metrics are limited to 32)
MAX_DEPTH = 64

# msgpack type bytes -> (extra header bytes, size of the length field) for str/bin
_LENGTH_PREFIXED = {0xC4: 1, 0xC5: 2, 0xC6: 4, 0xD9: 1, 0xDA: 2, 0xDB: 4}
#: one-byte elements: positive and negative fixints, {}, [], "", nil, false, true
_ONE_BYTE = bytes([*range(0x80), 0x80, 0x90, 0xA0, 0xC0, 0xC2, 0xC3, *range(0xE0, 0x100)])
#: a chunk entry ``[bin 32, int]``: its list, two elements, its digest's bytes
_CHUNK_COST = CONTAINER_COST + 2 * ELEMENT_COST + 32
# fixed-size scalars -> bytes after the type byte (ints, floats)
_FIXED = {0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8}


def _refuse(what: str, why: str) -> NoReturn:
    raise IntegrityError(f"{what} {why}")


def _budget(data: bytes, ratio: int) -> int:
    return ratio * len(data) + SLACK


def _container(data: bytes, pos: int, b: int) -> tuple[int, int, int] | None:
    """``(elements, header length, 1 for a map)`` of a container header, or None."""
    if 0x90 <= b <= 0x9F:
        return b & 0x0F, 1, 0
    if 0x80 <= b <= 0x8F:
        return 2 * (b & 0x0F), 1, 1
    if b in (0xDC, 0xDE):
        return int.from_bytes(data[pos + 1 : pos + 3], "big") * (2 if b == 0xDE else 1), 3, b == 0xDE
    if b in (0xDD, 0xDF):
        return int.from_bytes(data[pos + 1 : pos + 5], "big") * (2 if b == 0xDF else 1), 5, b == 0xDF
    return None


def _scalar_len(data: bytes, pos: int, b: int, what: str) -> tuple[int, int]:
    """``(bytes it occupies, payload bytes)`` of the scalar whose type byte ``b`` is at ``pos``."""
    if b <= 0x7F or b >= 0xE0 or b in (0xC0, 0xC2, 0xC3):
        return 1, 0
    if 0xA0 <= b <= 0xBF:
        return 1 + (b & 0x1F), b & 0x1F
    width = _LENGTH_PREFIXED.get(b)
    if width is not None:
        n = int.from_bytes(data[pos + 1 : pos + 1 + width], "big")
        return 1 + width + n, n
    fixed = _FIXED.get(b)
    if fixed is not None:
        return 1 + fixed, 0
    _refuse(what, f"holds msgpack type 0x{b:02x}, which is not accepted here")


def _chunk_run(data: bytes, pos: int, limit: int) -> int:
    """How many chunk entries of 40 bytes (``92 c4 20``, 32 bytes, ``ce`` and a 4-byte size:
    what register writes for chunks of 64 KiB to 4 GiB) follow one another from ``pos``, at
    most ``limit``: checked column by column on strided slices (in C), in windows that
    double while they match, so the work is in proportion to the run found."""
    run, step = 0, 64
    while run < limit:  # each turn doubles the window: O(log) turns
        start = pos + 40 * run
        k = min(step, limit - run, (len(data) - start) // 40)
        if k <= 0:
            break
        stop, matched = start + 40 * k, k
        for offset, want in ((0, b"\x92"), (1, b"\xc4"), (2, b"\x20"), (35, b"\xce")):
            column = data[start + offset : stop : 40]
            matched = min(matched, len(column) - len(column.lstrip(want)))
        run += matched
        if matched < k:
            break
        step *= 2
    return run


def _is_uint(data: bytes, pos: int) -> bool:
    return pos < len(data) and (data[pos] <= 0x7F or 0xCC <= data[pos] <= 0xCF)


def msgpack_cost(data: bytes, what: str, *, ratio: int = RATIO, max_depth: int = MAX_DEPTH) -> int:
    """Walk the msgpack document ``data`` header by header, building nothing, and return
    the estimated cost of decoding it; refuse (:class:`IntegrityError`) one that is
    truncated, has trailing bytes, holds an extension type, nests deeper than
    ``max_depth`` or would cost more than ``ratio`` times its length plus :data:`SLACK`.
    Runs of chunk entries ``[bin 32, int]`` (most of a large manifest) and of one-byte
    elements are taken in one step each, so the walk costs little Python time."""
    end, budget = len(data), _budget(data, ratio)
    pos = cost = 0
    pending = [1]  # elements still to read in each open container (the document: one)
    while pending:  # each turn reads one element: at most len(data) turns
        if pending[-1] == 0:
            pending.pop()
            continue
        pending[-1] -= 1
        if pos >= end:
            _refuse(what, "is truncated msgpack")
        b = data[pos]
        if b == 0x92 and data[pos + 1 : pos + 3] == b"\xc4\x20" and _is_uint(data, pos + 35):  # a chunk entry
            run = _chunk_run(data, pos, pending[-1] + 1)
            if run:  # ``run`` entries of 40 bytes: this one and the next run - 1
                pending[-1] -= run - 1
                pos += 40 * run
            else:
                pos += 35 + _scalar_len(data, pos + 35, data[pos + 35], what)[0]
            cost += _CHUNK_COST * max(run, 1)
        elif b in _ONE_BYTE:  # this element and the one-byte elements after it in the container
            window = data[pos : pos + min(pending[-1] + 1, 4096)]
            run = len(window) - len(window.lstrip(_ONE_BYTE))
            pending[-1] -= run - 1
            empties = data.count(b"\x90", pos, pos + run) + data.count(b"\x80", pos, pos + run)
            pos += run
            cost += empties * CONTAINER_COST
        elif (head := _container(data, pos, b)) is not None:
            count, skip, _is_map = head
            pos += skip
            if count > end - pos:  # every element takes at least one byte
                _refuse(what, f"declares {count} elements in {end - pos} bytes")
            cost += CONTAINER_COST + count * ELEMENT_COST
            if count:
                pending.append(count)
                if len(pending) > max_depth + 1:
                    _refuse(what, f"nests deeper than {max_depth} levels")
        else:
            size, payload = _scalar_len(data, pos, b, what)
            pos += size
            cost += payload
            if pos > end:
                _refuse(what, "is truncated msgpack")
        if cost > budget:
            _refuse(what, f"would take more than {budget} bytes of memory to decode ({end} bytes in)")
    if pos != end:
        _refuse(what, "has bytes after its msgpack document" if pos < end else "is truncated msgpack")
    return cost


def load_msgpack(data: bytes, what: str, *, ratio: int = RATIO, max_depth: int = MAX_DEPTH) -> Any:
    """Decode msgpack ``data`` once :func:`msgpack_cost` accepts it (str keys or not; bin as bytes)."""
    msgpack_cost(data, what, ratio=ratio, max_depth=max_depth)
    n = len(data)
    try:
        u = msgpack.Unpacker(
            raw=False,
            strict_map_key=False,
            max_buffer_size=max(n, 1),
            max_str_len=n,
            max_bin_len=n,
            max_array_len=n,
            max_map_len=n,
            max_ext_len=0,
        )
        u.feed(data)
        return u.unpack()
    except Exception as exc:  # msgpack raises several unrelated types
        raise IntegrityError(f"{what} is not valid msgpack") from exc


def json_cost(data: bytes, separators: bytes = b",:") -> int:
    """An upper estimate of what decoding JSON ``data`` costs, from byte counts (in C):
    every ``[``/``{`` may open a container and every byte of ``separators`` separate an
    element (for TOML: ``b",=\\n"``)."""
    containers = data.count(b"[") + data.count(b"{")
    elements = containers
    for i in range(len(separators)):
        elements += data.count(separators[i : i + 1])
    return containers * CONTAINER_COST + elements * ELEMENT_COST + len(data)


def check_cost(data: bytes, what: str, separators: bytes = b",:", ratio: int = RATIO) -> None:
    """Refuse text ``data`` whose :func:`json_cost` is above ``ratio`` times its length
    plus :data:`SLACK`."""
    budget = _budget(data, ratio)
    if len(data) * (CONTAINER_COST + ELEMENT_COST * (1 + len(separators)) + 1) <= budget:
        return  # within budget even if every byte opened a container and was every separator
    cost = json_cost(data, separators)
    if cost > budget:
        _refuse(what, f"would take more than {budget} bytes of memory to decode ({len(data)} bytes in)")


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


#: the decoder :func:`load_json` uses (what ``json.loads(..., parse_constant=...)`` builds
#: for each call), built once
_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def load_json(data: bytes, what: str, *, limit: int, ratio: int = RATIO) -> Any:
    """Decode JSON ``data`` of at most ``limit`` bytes whose :func:`json_cost` is within
    ``ratio`` times its length plus :data:`SLACK`; NaN and infinities are refused."""
    if not isinstance(data, (bytes, bytearray)):
        _refuse(what, "is not a byte string")
    if len(data) > limit:
        _refuse(what, f"is {len(data)} bytes, more than {limit}")
    check_cost(data if type(data) is bytes else bytes(data), what, ratio=ratio)
    try:  # as json.loads decodes bytes: the encoding detected, surrogates passed to the decoder
        return _DECODER.decode(data.decode(json.detect_encoding(data), "surrogatepass"))
    except (ValueError, RecursionError, TypeError) as exc:
        raise IntegrityError(f"{what} is not valid JSON") from exc
