"""DNS lookups for the pure checkers: through the inventory's resolver (what the world sees), or straight
at an authoritative server (what we published)."""

from __future__ import annotations

import socket
from collections.abc import Iterable

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdatatype
import dns.resolver
import dns.rrset
import dns.tsig

from sendfleet.core.dnsdiff import Current
from sendfleet.core.inventory import ResolverSettings, TsigKey, normalize_name
from sendfleet.core.lookup import LookupResult
from sendfleet.errors import CannotCheckError


def rdata_value(rdata: dns.rdata.Rdata) -> str:
    """One rdata as the pure core wants it (see LookupResult)."""
    rdtype = rdata.rdtype
    if rdtype == dns.rdatatype.TXT:
        return b"".join(rdata.strings).decode("utf-8", "replace")  # type: ignore[attr-defined]
    if rdtype in (dns.rdatatype.PTR, dns.rdatatype.CNAME, dns.rdatatype.NS):
        return normalize_name(rdata.target.to_text())  # type: ignore[attr-defined]
    if rdtype == dns.rdatatype.MX:
        return f"{rdata.preference} {normalize_name(rdata.exchange.to_text())}"  # type: ignore[attr-defined]
    return str(rdata.to_text())


def make_resolver(settings: ResolverSettings, *, timeout: float, lifetime: float) -> dns.resolver.Resolver:
    """A dnspython resolver asking the inventory's `dns_resolver` (default: the system's)."""
    if settings.nameservers:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = list(settings.nameservers)
    else:
        resolver = dns.resolver.Resolver()
    resolver.port = settings.port
    resolver.timeout = timeout
    resolver.lifetime = lifetime
    return resolver


class ResolverLookup:
    """`Lookup` through the inventory's resolver (dns_resolver), cached for one run.

    `answered` counts the questions that got any DNS answer (NOERROR or NXDOMAIN); if it stays 0 while
    `asked` is not, the resolver never answered and the caller reports "could not check" (exit 3).
    """

    def __init__(self, settings: ResolverSettings, *, timeout: float = 2.0, lifetime: float = 6.0) -> None:
        self.resolver = make_resolver(settings, timeout=timeout, lifetime=lifetime)
        self.asked = 0
        self.answered = 0
        self._cache: dict[tuple[str, str], LookupResult] = {}

    @property
    def where(self) -> str:
        return ", ".join(str(n) for n in self.resolver.nameservers) + f" port {self.resolver.port}"

    def __call__(self, name: str, rdtype: str) -> LookupResult:
        key = (normalize_name(name), rdtype.upper())
        if key not in self._cache:
            self._cache[key] = self._resolve(*key)
        return self._cache[key]

    def _resolve(self, name: str, rdtype: str) -> LookupResult:
        self.asked += 1
        try:
            answer = self.resolver.resolve(name + ".", rdtype, raise_on_no_answer=False, search=False)
        except dns.resolver.NXDOMAIN:
            self.answered += 1
            return LookupResult("nxdomain")
        except dns.resolver.NoNameservers as err:
            errors = err.kwargs.get("errors") or []
            rcodes = [e[4].rcode() for e in errors if len(e) > 4 and isinstance(e[4], dns.message.Message)]
            if rcodes:  # it answered, with SERVFAIL/REFUSED...
                self.answered += 1
                return LookupResult("error", detail="/".join(sorted({dns.rcode.to_text(r) for r in rcodes})))
            return LookupResult("error", detail=_short(err, "no answer"))
        except dns.exception.Timeout:
            if not self.answered:  # silent from the first question on: do not wait out every one
                raise CannotCheckError(f"the resolver ({self.where}) never answered: could not check") from None
            return LookupResult("error", detail="timeout")
        except dns.exception.DNSException as err:
            return LookupResult("error", detail=_short(err, type(err).__name__))
        self.answered += 1
        if answer.rrset is None:
            return LookupResult("nodata")
        return LookupResult("ok", tuple(rdata_value(r) for r in answer.rrset))


def _short(err: Exception, default: str) -> str:
    text = str(err).splitlines()[0] if str(err) else default
    return text[:160]


class Authoritative:
    """Questions straight to an authoritative server over one TCP connection (TSIG-signed if a key is set)."""

    def __init__(self, server: str, port: int, key: TsigKey | None, *, timeout: float = 5.0) -> None:
        self.server, self.port, self.timeout = server, port, timeout
        self.key = tsig_key(key) if key is not None else None
        self._sock: socket.socket | None = None

    def __enter__(self) -> Authoritative:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _query(self, qname: str, rdtype: str) -> dns.message.Message:
        query = dns.message.make_query(qname + ".", rdtype)
        query.flags &= ~dns.flags.RD
        if self.key is not None:
            query.use_tsig(self.key)
        for attempt in (1, 2):
            try:
                if self._sock is None:
                    self._sock = socket.create_connection((self.server, self.port), timeout=self.timeout)
                return dns.query.tcp(query, self.server, timeout=self.timeout, port=self.port, sock=self._sock)
            except (OSError, EOFError, dns.exception.Timeout) as err:
                self.close()  # the server may close idle connections: reconnect once
                if attempt == 2:
                    raise CannotCheckError(
                        f"authoritative server {self.server} port {self.port}: {_short(err, type(err).__name__)}"
                    ) from None
            except dns.exception.DNSException as err:
                raise CannotCheckError(
                    f"authoritative server {self.server} port {self.port}: {_short(err, type(err).__name__)}"
                ) from None
        raise AssertionError("unreachable")

    def current(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Current]:
        """What the server holds now at each (name, type): TTL and normalised values."""
        result: dict[tuple[str, str], Current] = {}
        for name, rdtype in sorted(set(keys)):
            response = self._query(name, rdtype)
            rcode = response.rcode()
            if rcode == dns.rcode.NXDOMAIN:
                result[(name, rdtype)] = Current(None, ())
                continue
            if rcode != dns.rcode.NOERROR:
                raise CannotCheckError(
                    f"authoritative server {self.server} answered {dns.rcode.to_text(rcode)}"
                    f" for {name} {rdtype}"
                    " (is it authoritative for that zone?)"
                )
            rrset = _find(response.answer, name, rdtype)
            if rrset is None:
                result[(name, rdtype)] = Current(None, ())
            else:
                result[(name, rdtype)] = Current(rrset.ttl, tuple(rdata_value(r) for r in rrset))
        return result


def _find(section: list[dns.rrset.RRset], name: str, rdtype: str) -> dns.rrset.RRset | None:
    qname = dns.name.from_text(name + ".")
    qtype = dns.rdatatype.from_text(rdtype)
    for rrset in section:
        if rrset.name == qname and rrset.rdtype == qtype:
            return rrset
    return None


def tsig_key(key: TsigKey) -> dns.tsig.Key:
    return dns.tsig.Key(key.name + ".", key.secret, key.algorithm + ".")


class AuthoritativeLookup:
    """`Lookup` asking the update server itself (what was published, before any cache): for rotations that
    must wait until a record is really there. Names it does not serve come back as errors (REFUSED)."""

    def __init__(self, server: str, port: int, key: TsigKey | None) -> None:
        self.auth = Authoritative(server, port, key)
        self.where = f"{server} port {port} (authoritative)"
        self.asked = 0
        self.answered = 0
        self._cache: dict[tuple[str, str], LookupResult] = {}

    def close(self) -> None:
        self.auth.close()

    def __call__(self, name: str, rdtype: str) -> LookupResult:
        key = (normalize_name(name), rdtype.upper())
        if key not in self._cache:
            self.asked += 1
            response = self.auth._query(*key)
            self.answered += 1
            rcode = response.rcode()
            if rcode == dns.rcode.NXDOMAIN:
                result = LookupResult("nxdomain")
            elif rcode != dns.rcode.NOERROR:
                result = LookupResult("error", detail=dns.rcode.to_text(rcode))
            else:
                rrset = _find(response.answer, *key)
                if rrset is None:
                    result = LookupResult("nodata")
                else:
                    result = LookupResult("ok", tuple(rdata_value(r) for r in rrset))
            self._cache[key] = result
        return self._cache[key]
