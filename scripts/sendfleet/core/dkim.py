"""DKIM (RFC 6376, RFC 8463): the public record of a controller-side private key; the linter (pure)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from sendfleet.core.findings import Finding

MIN_BITS = 1024  # below: receivers (Gmail, Microsoft) ignore or fail the signature
RECOMMENDED_BITS = 2048


@dataclass(frozen=True)
class DkimPublic:
    key_type: str  # "rsa" | "ed25519"
    bits: int
    p: str  # base64 of the public key (SubjectPublicKeyInfo DER for RSA, raw 32 bytes for Ed25519)

    def record(self) -> str:
        return f"v=DKIM1; k={self.key_type}; p={self.p}"


class DkimKeyError(ValueError):
    pass


def public_from_private_pem(pem: bytes) -> DkimPublic:
    """Derive the public record from a PEM private key (PKCS#1 or PKCS#8). DkimKeyError if unusable."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise DkimKeyError("the private key is encrypted (sendfleet needs it unencrypted on the controller)") from None
    except (ValueError, UnsupportedAlgorithm) as err:
        raise DkimKeyError(
            f"not a PEM private key ({str(err).splitlines()[0] if str(err) else 'unreadable'})"
        ) from None
    if isinstance(key, rsa.RSAPrivateKey):
        der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return DkimPublic("rsa", key.key_size, base64.b64encode(der).decode())
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return DkimPublic("ed25519", 256, base64.b64encode(raw).decode())
    raise DkimKeyError(f"unsupported key type {type(key).__name__} (DKIM uses RSA or Ed25519)")


def parse_tags(record: str) -> dict[str, str]:
    """A DKIM/DMARC-style tag list `a=b; c=d` -> dict (whitespace removed around tags)."""
    tags: dict[str, str] = {}
    for part in record.split(";"):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise ValueError(f"bad tag {part!r}")
        name, value = part.split("=", 1)
        name = name.strip()
        if name in tags:
            raise ValueError(f"tag {name!r} appears twice")
        tags[name] = value.strip()
    return tags


def key_bits(key_type: str, p: str) -> int:
    """Size of a published key; DkimKeyError if p= does not hold a key of that type."""
    try:
        raw = base64.b64decode("".join(p.split()), validate=True)
    except (binascii.Error, ValueError):
        raise DkimKeyError("p= is not valid base64") from None
    if key_type == "ed25519":
        if len(raw) != 32:
            raise DkimKeyError(f"Ed25519 key of {len(raw)} bytes (expected 32)")
        return 256
    if key_type != "rsa":
        raise DkimKeyError(f"unknown key type k={key_type}")
    try:
        public = serialization.load_der_public_key(raw)
    except (ValueError, UnsupportedAlgorithm):
        try:  # some tools publish the bare PKCS#1 RSAPublicKey
            public = serialization.load_der_public_key(_pkcs1_to_spki(raw))
        except (ValueError, UnsupportedAlgorithm):
            raise DkimKeyError("p= does not hold an RSA public key") from None
    if not isinstance(public, rsa.RSAPublicKey):
        raise DkimKeyError("p= holds a key that is not RSA")
    return public.key_size


def _pkcs1_to_spki(pkcs1: bytes) -> bytes:
    algo = bytes.fromhex("300d06092a864886f70d0101010500")
    bitstring = b"\x03" + _der_len(len(pkcs1) + 1) + b"\x00" + pkcs1
    body = algo + bitstring
    return b"\x30" + _der_len(len(body)) + body


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def lint(
    subject: str, txt_values: Sequence[str], expected_p: str | None = None, *, active: bool = True
) -> list[Finding]:
    """Lint the TXT values published at <selector>._domainkey.<domain>.

    expected_p: the key the controller holds (a published key that differs is an error).
    active: the selector is in use (an empty p=, i.e. revoked, is then an error, else a warning).
    """
    check = "dkim"
    records = [v for v in txt_values if v.strip()]
    if not records:
        return [Finding("error", subject, check, "no DKIM record")]
    if len(records) > 1:
        return [Finding("error", subject, check, f"{len(records)} TXT records at the selector (one expected)")]
    try:
        tags = parse_tags(records[0])
    except ValueError as err:
        return [Finding("error", subject, check, f"syntax: {err}")]
    if "v" in tags and (tags["v"] != "DKIM1" or next(iter(tags)) != "v"):
        return [Finding("error", subject, check, "v= must be the first tag and equal DKIM1")]
    if "p" not in tags:
        return [Finding("error", subject, check, "no p= tag")]
    p = "".join(tags["p"].split())
    if not p:
        return [Finding("error" if active else "warning", subject, check, "p= is empty: the key is revoked")]
    key_type = tags.get("k", "rsa").lower()
    try:
        bits = key_bits(key_type, p)
    except DkimKeyError as err:
        return [Finding("error", subject, check, str(err))]
    findings: list[Finding] = []
    if key_type == "rsa" and bits < MIN_BITS:
        findings.append(Finding("error", subject, check, f"RSA key of {bits} bits (at least {MIN_BITS} needed)"))
    elif key_type == "rsa" and bits < RECOMMENDED_BITS:
        findings.append(Finding("warning", subject, check, f"RSA key of {bits} bits ({RECOMMENDED_BITS} recommended)"))
    if "y" in [f.strip() for f in tags.get("t", "").split(":")]:
        findings.append(Finding("warning", subject, check, "t=y: testing mode, receivers may ignore the signature"))
    hashes = [h.strip().lower() for h in tags.get("h", "sha256").split(":")]
    if "sha256" not in hashes:
        findings.append(Finding("error", subject, check, f"h={tags['h']}: sha256 not allowed"))
    if expected_p is not None and p != expected_p:
        findings.append(Finding("error", subject, check, "published key differs from the controller's private key"))
    if not any(f.status == "error" for f in findings):
        findings.append(Finding("ok", subject, check, f"DKIM {key_type} key of {bits} bits published"))
    return findings
