#!/usr/bin/env python3
"""Exit 0 when <selector>._domainkey.<domain> TXT at one DNS server carries the public half of a PEM key.

usage: dkim_published.py SERVER[:PORT] DOMAIN SELECTOR PEM_FILE
Exit 0: published and equal; 1: absent or different (printed); 2: bad usage.
Asks the server given (the zone's authoritative server) directly: no resolver, no cache.
"""

from __future__ import annotations

import base64
import sys

import dns.message
import dns.query
import dns.rdatatype
from cryptography.hazmat.primitives import serialization


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        sys.stderr.write(__doc__ or "")
        return 2
    server, domain, selector, pem_path = argv
    host, _, port = server.partition(":")
    with open(pem_path, "rb") as fh:
        key = serialization.load_pem_private_key(fh.read(), password=None)
    want = base64.b64encode(key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    name = f"{selector}._domainkey.{domain}."
    query = dns.message.make_query(name, dns.rdatatype.TXT)
    answer = dns.query.tcp(query, host, port=int(port or 53), timeout=5)
    for rrset in answer.answer:
        for rdata in rrset:
            text = b"".join(rdata.strings).decode()
            tags = dict(t.strip().split("=", 1) for t in text.split(";") if "=" in t)
            if tags.get("p", "").replace(" ", "") == want:
                print(f"{name} TXT at {server} carries the key")
                return 0
    print(f"{name} TXT at {server} does not carry the key yet (rcode {answer.rcode()}, {len(answer.answer)} answers)")
    return 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
