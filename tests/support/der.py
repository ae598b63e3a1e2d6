"""A tiny DER walker and mutator: every TLV of a structure, at every nesting level, with
the byte offsets needed to break its tag, its length or its contents."""

from __future__ import annotations

from dataclasses import dataclass

CONSTRUCTED = 0x20


@dataclass(frozen=True)
class Node:
    """One TLV: where its header starts, where its contents start and end, its depth."""

    start: int
    content: int
    end: int
    tag: int
    depth: int


def _length(data: bytes, pos: int) -> tuple[int, int]:
    first = data[pos]
    if first < 0x80:
        return first, pos + 1
    count = first & 0x7F
    return int.from_bytes(data[pos + 1:pos + 1 + count], "big"), pos + 1 + count


def walk(data: bytes, start: int = 0, end: int | None = None, depth: int = 0) -> list[Node]:
    """Every TLV of well-formed DER, parents before children. Primitive BIT STRINGs and
    OCTET STRINGs that themselves hold DER (extensions, keys) are walked into too."""
    end = len(data) if end is None else end
    nodes: list[Node] = []
    pos = start
    while pos < end:
        tag = data[pos]
        length, content = _length(data, pos + 1)
        node = Node(pos, content, content + length, tag, depth)
        nodes.append(node)
        inner = content + (1 if tag == 0x03 else 0)   # BIT STRING: skip the unused-bits octet
        if tag & CONSTRUCTED or (tag in (0x03, 0x04) and _looks_like_der(data, inner, node.end)):
            try:
                nodes += walk(data, inner, node.end, depth + 1)
            except (IndexError, ValueError):
                pass
        pos = node.end
    return nodes


def _looks_like_der(data: bytes, start: int, end: int) -> bool:
    if end - start < 2 or data[start] not in (0x30, 0x31, 0x02, 0x04, 0x03):
        return False
    try:
        length, content = _length(data, start + 1)
    except IndexError:
        return False
    return content + length == end


def encode_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


#: Length encodings a hostile client might send instead of the real one.
HOSTILE_LENGTHS: tuple[bytes, ...] = (
    b"\x80",                          # indefinite (BER, not DER)
    b"\x84\xff\xff\xff\xff",          # 4 GiB
    b"\x88\xff\xff\xff\xff\xff\xff\xff\xff",  # 2^64-1
    b"\x88\x80\x00\x00\x00\x00\x00\x00\x00",  # "negative" if read as signed
    b"\xff",                          # reserved length octet
    b"\x81\x05",                      # non-minimal
    b"\x82\x00\x01",                  # non-minimal, leading zero
    b"\x00",
    b"\x7f",
    b"\x90" + b"\xff" * 16,           # 16 length octets
)


def replace_length(data: bytes, node: Node, new: bytes) -> bytes:
    return data[:node.start + 1] + new + data[node.content:]


def set_length(data: bytes, node: Node, n: int) -> bytes:
    return replace_length(data, node, encode_length(n))


def replace_tag(data: bytes, node: Node, tag: int) -> bytes:
    return data[:node.start] + bytes([tag]) + data[node.start + 1:]


def replace_content(data: bytes, node: Node, content: bytes) -> bytes:
    """New contents with a correct own length (the parents' lengths are left as they were)."""
    return data[:node.start + 1] + encode_length(len(content)) + content + data[node.end:]


def truncate(data: bytes, node: Node, keep: int) -> bytes:
    return data[:min(node.start + keep, len(data))]


def duplicate(data: bytes, node: Node) -> bytes:
    return data[:node.end] + data[node.start:node.end] + data[node.end:]


def remove(data: bytes, node: Node) -> bytes:
    return data[:node.start] + data[node.end:]


def replace_content_nested(data: bytes, nodes: list[Node], node: Node, content: bytes) -> bytes:
    """New contents for ``node`` with every enclosing length fixed up, so the outer
    structure stays well-formed and the parser reaches the changed element."""
    out = replace_content(data, node, content)
    delta = len(out) - len(data)
    ancestors = sorted((a for a in nodes if a.start < node.start and a.end >= node.end and a.content <= node.start),
                       key=lambda a: a.depth, reverse=True)
    for a in ancestors:
        old_header = a.content - a.start - 1
        new_len = encode_length(a.end - a.content + delta)
        out = out[:a.start + 1] + new_len + out[a.content:]
        delta += len(new_len) - old_header
    return out
