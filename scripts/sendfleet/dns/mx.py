"""The MX hosts of a recipient domain: the one lookup the shaper (policy service), the agent (queue
classification) and the feedback processor (a bounce's provider class) share; each caches the answers its own way.

dnspython is imported at the first lookup, not with this module: the feedback processor starts once per message.

Answers (`MxAnswer.status`):
- `ok`: the MX hosts by preference (then name), lower case without the final dot, TTL of the MX records;
- `implicit`: the domain exists but has no MX record (NODATA): RFC 5321 5.1 implicit MX, the domain itself is the
  host; TTL from the zone's SOA (RFC 2308 negative caching) or `NEGATIVE_TTL`;
- `nomail`: the domain does not exist (NXDOMAIN) or says it takes no mail (RFC 7505 null MX `0 .`): no host;
- `failed`: DNS could not say now (timeout, SERVFAIL/REFUSED, anything else): no host, TTL 0. A caller must not
  take a failed answer for one of the others.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sendfleet.core import shaping

OK, IMPLICIT, NOMAIL, FAILED = "ok", "implicit", "nomail", "failed"
DEFAULT_TIMEOUT = 5.0
NEGATIVE_TTL = 300.0  # no SOA in a negative answer to take the TTL from


@dataclass(frozen=True)
class MxAnswer:
    status: str  # ok | implicit | nomail | failed
    hosts: tuple[str, ...] = ()
    ttl: float = 0.0
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.status == FAILED


def provider_class(answer: MxAnswer, classes: Mapping[str, shaping.ProviderClass]) -> str | None:
    """The provider class of the domain `answer` is about (sendfleet.core.shaping.classify of its hosts; a domain
    with no host is `other`), or None when the lookup failed: the class is unknown, not `other`."""
    return None if answer.failed else shaping.classify(answer.hosts, classes)


def _host(name: Any) -> str:
    return str(name).lower().rstrip(".")


def _negative_ttl(response: Any) -> float:
    """RFC 2308: the SOA of the authority section, min(its TTL, its MINIMUM)."""
    import dns.rdatatype

    for rrset in getattr(response, "authority", None) or ():
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
            return float(min(rrset.ttl, rrset[0].minimum))
    return NEGATIVE_TTL


class MxLookup:
    """`MxLookup(...)(domain) -> MxAnswer`. Asks `nameservers` on `port` (none: the system's resolvers), giving up
    after `timeout` seconds; `resolver` (anything with dnspython's Resolver.resolve) replaces the one it would
    make, for tests."""

    def __init__(self, nameservers: Sequence[str] = (), *, port: int = 53, timeout: float = DEFAULT_TIMEOUT,
                 resolver: Any = None) -> None:
        self.nameservers = list(nameservers)
        self.port = port
        self.timeout = timeout
        self._resolver = resolver

    @property
    def resolver(self) -> Any:
        if self._resolver is None:
            import dns.resolver

            resolver = dns.resolver.Resolver(configure=not self.nameservers)
            if self.nameservers:
                resolver.nameservers = self.nameservers
                resolver.port = self.port
            resolver.lifetime = self.timeout
            resolver.timeout = min(resolver.timeout, self.timeout)
            self._resolver = resolver
        return self._resolver

    def __call__(self, domain: str) -> MxAnswer:
        import dns.exception
        import dns.resolver

        domain = _host(domain)
        if not domain:
            return MxAnswer(FAILED, detail="no domain")
        try:
            answer = self.resolver.resolve(domain + ".", "MX", raise_on_no_answer=False, search=False,
                                           lifetime=self.timeout)
        except dns.resolver.NXDOMAIN as err:
            responses = list((err.kwargs.get("responses") or {}).values())
            return MxAnswer(NOMAIL, ttl=_negative_ttl(responses[0]) if responses else NEGATIVE_TTL,
                            detail="NXDOMAIN")
        except dns.resolver.NoAnswer as err:  # a resolver told to raise on NODATA
            return MxAnswer(IMPLICIT, (domain,), _negative_ttl(err.kwargs.get("response")))
        except dns.resolver.NoNameservers as err:
            return MxAnswer(FAILED, detail=" ".join(str(err).split())[:200] or "SERVFAIL")
        except dns.exception.Timeout:
            return MxAnswer(FAILED, detail=f"timeout after {self.timeout:g} s")
        except (dns.exception.DNSException, OSError, ValueError) as err:
            return MxAnswer(FAILED, detail=f"{type(err).__name__}: {' '.join(str(err).split())[:200]}")
        rrset = answer.rrset
        if rrset is None or not len(rrset):  # NODATA: RFC 5321 implicit MX
            return MxAnswer(IMPLICIT, (domain,), _negative_ttl(answer.response))
        records = sorted((int(r.preference), _host(r.exchange)) for r in rrset)
        if len(records) == 1 and records[0][1] == "":  # RFC 7505 null MX
            return MxAnswer(NOMAIL, ttl=float(rrset.ttl), detail="null MX")
        return MxAnswer(OK, tuple(h for _, h in records if h), float(rrset.ttl))
