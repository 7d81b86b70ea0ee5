"""Query names of DNS blocklists (RFC 5782 §2.1, §2.4), as text and as DNS wire bytes. Pure."""

from __future__ import annotations

_OCTET_LABELS: tuple[bytes, ...] = tuple(bytes([len(str(i))]) + str(i).encode() for i in range(256))
_NIBBLE_LABELS: tuple[bytes, ...] = tuple(b"\x01" + format(i, "x").encode() for i in range(16))

QTYPE_A = 1
QTYPE_PTR = 12
QTYPE_TXT = 16
CLASS_IN = 1


def reverse_labels(version: int, value: int) -> str:
    """`4.3.2.1` for 1.2.3.4; 32 reversed nibbles for an IPv6 address."""
    if version == 4:
        return ".".join(str((value >> shift) & 0xFF) for shift in (0, 8, 16, 24))
    return ".".join(format((value >> (4 * i)) & 0xF, "x") for i in range(32))


def query_name(version: int, value: int, zone: str) -> str:
    return f"{reverse_labels(version, value)}.{zone}"


def ptr_name(version: int, value: int) -> str:
    return query_name(version, value, "in-addr.arpa" if version == 4 else "ip6.arpa")


def name_wire(name: str) -> bytes:
    """A DNS name (text, no escapes) in wire form, lower-cased, with the root label."""
    out = bytearray()
    for label in name.lower().rstrip(".").split("."):
        raw = label.encode("ascii")
        if not 0 < len(raw) < 64:
            raise ValueError(f"bad label in {name!r}")
        out.append(len(raw))
        out += raw
    out.append(0)
    if len(out) > 255:
        raise ValueError(f"name too long: {name!r}")
    return bytes(out)


def question_suffix(zone: str, qtype: int = QTYPE_A) -> bytes:
    """The wire bytes following the reversed labels: the zone name, QTYPE and QCLASS."""
    return name_wire(zone) + qtype.to_bytes(2, "big") + CLASS_IN.to_bytes(2, "big")


def question4(value: int, suffix: bytes) -> bytes:
    """The question section for an IPv4 address, given `question_suffix(zone)`. The bulk path."""
    o = _OCTET_LABELS
    return b"".join((o[value & 0xFF], o[(value >> 8) & 0xFF], o[(value >> 16) & 0xFF], o[value >> 24], suffix))


def question6(value: int, suffix: bytes) -> bytes:
    n = _NIBBLE_LABELS
    return b"".join([n[(value >> (4 * i)) & 0xF] for i in range(32)] + [suffix])


def question(version: int, value: int, suffix: bytes) -> bytes:
    return question4(value, suffix) if version == 4 else question6(value, suffix)


def question_name(name: str, qtype: int) -> bytes:
    return name_wire(name) + qtype.to_bytes(2, "big") + CLASS_IN.to_bytes(2, "big")
