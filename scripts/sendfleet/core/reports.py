"""DMARC aggregate (RFC 7489 appendix C) and SMTP TLS reports (RFC 8460) as receivers mail them to the bounce
domain's `dmarc` and `tlsrpt` addresses. Pure: bytes in, frozen records out; every problem is a one-line
`FeedbackParseError`.

A small parser of our own rather than parsedmarc: parsedmarc pulls in Elasticsearch, Kafka, Splunk and mail
clients, while the reports need an XML walk over a dozen elements and a JSON walk over a few keys.

Hostile input is expected (anyone can mail the rua address):
- compressed attachments (gzip, zip with one member) are inflated incrementally and refused past
  `Limits.max_uncompressed_bytes` or `Limits.max_ratio` times their compressed size (gzip and zip bombs are parse
  errors, never a memory blow-up);
- XML is read with expat and refused as soon as it declares a DOCTYPE or an entity (no DTD processing at all:
  no billion laughs, no external entities); namespaces are ignored (DMARC 2.0 reports carry one);
- JSON nested too deep or with numbers too long for int() is a parse error like any other malformed JSON.
"""

from __future__ import annotations

import io
import ipaddress
import json
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from xml.parsers import expat

_CHUNK = 64 * 1024
_MAX_EPOCH = 2**40  # year ~36800: anything larger is garbage, not a date
_TEXT_CAP = 255  # names, ids and results longer than this are cut (they are labels, not content)


class FeedbackParseError(ValueError):
    """A message or report that cannot be read; the message is one line saying what is wrong."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split())[:500])


@dataclass(frozen=True)
class Limits:
    """What one feedback message may cost: its raw size, the size of any inflated attachment, and how many times
    its compressed size an attachment may inflate to."""

    max_message_bytes: int = 10 * 1024 * 1024
    max_uncompressed_bytes: int = 50 * 1024 * 1024
    max_ratio: int = 200


DEFAULT_LIMITS = Limits()


# ----------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class DmarcRecord:
    source_ip: str
    count: int
    disposition: str  # none | quarantine | reject
    header_from: str
    dkim: str  # policy_evaluated: pass | fail
    spf: str  # policy_evaluated: pass | fail
    dkim_results: tuple[tuple[str, str], ...] = ()  # auth_results: (domain, result)
    spf_results: tuple[tuple[str, str], ...] = ()  # auth_results: (domain, result)
    dkim_selectors: tuple[str, ...] = ()  # the selector of each dkim_results entry, in order ("" when absent)


@dataclass(frozen=True)
class DmarcReport:
    org_name: str
    report_id: str
    domain: str  # policy_published
    begin: int  # Unix seconds
    end: int
    policy: str  # policy_published p
    records: tuple[DmarcRecord, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class TlsPolicy:
    policy_type: str  # sts | tlsa | no-policy-found
    policy_domain: str
    success: int
    failure: int
    failures: tuple[tuple[str, int], ...] = ()  # (result-type, failed-session-count)


@dataclass(frozen=True)
class TlsReport:
    org_name: str
    report_id: str
    begin: int  # Unix seconds
    end: int
    policies: tuple[TlsPolicy, ...] = ()


# ------------------------------------------------------------------------------------------ decompression


def gunzip(data: bytes, limits: Limits, what: str = "attachment") -> bytes:
    """Inflate a gzip stream (first member) incrementally; refuse it past the limits."""
    cap = _cap(len(data), limits)
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = bytearray()
    pending = data
    try:
        while not inflater.eof:
            chunk = inflater.decompress(pending, _CHUNK)
            out += chunk
            _check_size(len(out), cap, len(data), limits, what)
            pending = inflater.unconsumed_tail
            if not chunk and not pending:
                raise FeedbackParseError(f"{what}: truncated gzip data")
    except zlib.error as err:
        raise FeedbackParseError(f"{what}: not valid gzip data ({err})") from None
    return bytes(out)


def unzip(data: bytes, limits: Limits, what: str = "attachment") -> tuple[str, bytes]:
    """The one file member of a zip archive (name, content), read in chunks; refused past the limits."""
    cap = _cap(len(data), limits)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = [i for i in archive.infolist() if not i.is_dir()]
            if len(members) != 1:
                raise FeedbackParseError(f"{what}: a zip report holds exactly one file, this one {len(members)}")
            info = members[0]
            _check_size(info.file_size, cap, len(data), limits, f"{what}: {info.filename[:80]!r}")
            out = bytearray()
            with archive.open(info) as member:
                while True:
                    chunk = member.read(_CHUNK)
                    if not chunk:
                        break
                    out += chunk
                    _check_size(len(out), cap, len(data), limits, f"{what}: {info.filename[:80]!r}")
            return info.filename, bytes(out)
    except FeedbackParseError:
        raise
    except Exception as err:  # zipfile's failures span BadZipFile, zlib/lzma/bz2 errors, OSError,
        # EOFError, NotImplementedError (method), RuntimeError (encryption), struct and value errors: all one thing
        raise FeedbackParseError(f"{what}: not a readable zip archive ({type(err).__name__}: {err})") from None


def _cap(compressed: int, limits: Limits) -> int:
    return min(limits.max_uncompressed_bytes, limits.max_ratio * max(compressed, 1))


def _check_size(size: int, cap: int, compressed: int, limits: Limits, what: str) -> None:
    if size <= cap:
        return
    if size > limits.max_uncompressed_bytes:
        raise FeedbackParseError(f"{what}: inflates past {limits.max_uncompressed_bytes} bytes "
                                 "(max_uncompressed_bytes)")
    raise FeedbackParseError(f"{what}: inflates past {limits.max_ratio} times its {compressed} compressed bytes "
                             "(max_ratio)")


def inflate(data: bytes, name: str, limits: Limits, what: str = "attachment") -> bytes:
    """An attachment's content, inflated when it is gzip or zip (by its magic bytes, whatever `name` says)."""
    if data[:2] == b"\x1f\x8b":
        return gunzip(data, limits, what)
    if data[:4] == b"PK\x03\x04" or data[:4] == b"PK\x05\x06":
        return unzip(data, limits, what)[1]
    if len(data) > limits.max_uncompressed_bytes:
        raise FeedbackParseError(f"{what} {name[:80]!r}: larger than {limits.max_uncompressed_bytes} bytes")
    return data


def sniff(content: bytes) -> str | None:
    """'xml' or 'json' by the first significant character of an inflated report, else None."""
    head = content[:512].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"<"):
        return "xml"
    if head.startswith(b"{"):
        return "json"
    if head[:2] in (b"\xff\xfe", b"\xfe\xff") or head.startswith(b"\x00<") or head.startswith(b"<\x00"):
        return "xml"  # UTF-16 XML: expat reads it, and refuses a DOCTYPE in it as in UTF-8
    return None


# ------------------------------------------------------------------------------------------------- XML


class _Node:
    __slots__ = ("children", "tag", "text")

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.children: list[_Node] = []
        self.text: list[str] = []

    def find(self, tag: str) -> _Node | None:
        return next((c for c in self.children if c.tag == tag), None)

    def findall(self, tag: str) -> list[_Node]:
        return [c for c in self.children if c.tag == tag]

    def value(self) -> str:
        return "".join(self.text).strip()


def _local(tag: str) -> str:
    return tag.rpartition(":")[2]


def parse_xml(content: bytes, what: str = "XML") -> _Node:
    """A small element tree from expat; a DOCTYPE or entity declaration anywhere is refused before it is used."""
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    root: list[_Node] = []
    stack: list[_Node] = []

    def doctype(name: str, *_: Any) -> None:
        raise FeedbackParseError(f"{what}: declares a DOCTYPE ({str(name)[:40]}); refused (no DTD processing)")

    def entity(name: str, *_: Any) -> None:
        raise FeedbackParseError(f"{what}: declares an entity ({str(name)[:40]}); refused (no DTD processing)")

    def external(*_: Any) -> int:
        raise FeedbackParseError(f"{what}: refers to an external entity; refused")

    def start(tag: str, _attrs: Any) -> None:
        node = _Node(_local(tag))
        if stack:
            stack[-1].children.append(node)
        elif root:
            raise FeedbackParseError(f"{what}: more than one root element")
        else:
            root.append(node)
        stack.append(node)

    def end(_tag: str) -> None:
        stack.pop()

    def chars(data: str) -> None:
        if stack:
            stack[-1].text.append(data)

    parser.StartDoctypeDeclHandler = doctype
    parser.EntityDeclHandler = entity
    parser.UnparsedEntityDeclHandler = entity
    parser.ExternalEntityRefHandler = external
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    try:
        parser.Parse(content, True)
    except expat.ExpatError as err:
        raise FeedbackParseError(f"{what}: not well-formed XML ({expat.errors.messages[err.code]}, "
                                 f"line {err.lineno})") from None
    except RecursionError:
        raise FeedbackParseError(f"{what}: nested too deep") from None
    if not root:
        raise FeedbackParseError(f"{what}: no root element")
    return root[0]


def _text(node: _Node | None, path: str, what: str, *, required: bool = True) -> str:
    cur = node
    for part in path.split("/"):
        cur = cur.find(part) if cur is not None else None
    value = cur.value() if cur is not None else ""
    if required and not value:
        raise FeedbackParseError(f"{what}: {path} is missing or empty")
    return value[:_TEXT_CAP]


def _int(value: str, where: str, what: str, *, upper: int = _MAX_EPOCH) -> int:
    text = value.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 20 or int(text) > upper:
        raise FeedbackParseError(f"{what}: {where}: expected a whole number, got {value[:40]!r}")
    return int(text)


def parse_dmarc(content: bytes) -> DmarcReport:
    """A DMARC aggregate report (inflated XML) -> DmarcReport."""
    what = "DMARC report"
    root = parse_xml(content, what)
    if root.tag != "feedback":
        raise FeedbackParseError(f"{what}: the root element is <{root.tag[:40]}>, not <feedback>")
    meta = root.find("report_metadata")
    if meta is None:
        raise FeedbackParseError(f"{what}: report_metadata is missing")
    published = root.find("policy_published")
    if published is None:
        raise FeedbackParseError(f"{what}: policy_published is missing")
    begin = _int(_text(meta, "date_range/begin", what), "report_metadata/date_range/begin", what)
    end = _int(_text(meta, "date_range/end", what), "report_metadata/date_range/end", what)
    if end < begin:
        raise FeedbackParseError(f"{what}: date_range ends ({end}) before it begins ({begin})")
    records = []
    for i, rec in enumerate(root.findall("record")):
        w = f"record[{i}]"
        row = rec.find("row")
        ip = _text(row, "source_ip", f"{what}: {w}/row")
        try:
            ip = str(ipaddress.ip_address(ip))
        except ValueError:
            raise FeedbackParseError(f"{what}: {w}/row/source_ip: not an IP address: {ip[:60]!r}") from None
        count = _int(_text(row, "count", f"{what}: {w}/row"), f"{w}/row/count", what)
        dkim_results: list[tuple[str, str]] = []
        selectors: list[str] = []
        spf_results: list[tuple[str, str]] = []
        auth = rec.find("auth_results")
        for d in auth.findall("dkim") if auth is not None else ():
            dkim_results.append((_text(d, "domain", what, required=False).lower(),
                                 _text(d, "result", f"{what}: {w}/auth_results/dkim").lower()))
            selectors.append(_text(d, "selector", what, required=False))
        for s in auth.findall("spf") if auth is not None else ():
            spf_results.append((_text(s, "domain", what, required=False).lower(),
                                _text(s, "result", f"{what}: {w}/auth_results/spf").lower()))
        records.append(DmarcRecord(
            source_ip=ip,
            count=count,
            disposition=_text(row, "policy_evaluated/disposition", f"{what}: {w}/row").lower(),
            header_from=_text(rec, "identifiers/header_from", f"{what}: {w}").lower(),
            dkim=_text(row, "policy_evaluated/dkim", f"{what}: {w}/row", required=False).lower() or "none",
            spf=_text(row, "policy_evaluated/spf", f"{what}: {w}/row", required=False).lower() or "none",
            dkim_results=tuple(dkim_results),
            spf_results=tuple(spf_results),
            dkim_selectors=tuple(selectors),
        ))
    return DmarcReport(
        org_name=_text(meta, "org_name", f"{what}: report_metadata"),
        report_id=_text(meta, "report_id", f"{what}: report_metadata"),
        domain=_text(published, "domain", f"{what}: policy_published").lower(),
        begin=begin,
        end=end,
        policy=_text(published, "p", f"{what}: policy_published").lower(),
        records=tuple(records),
    )


# ------------------------------------------------------------------------------------------------ JSON


def _obj(value: Any, where: str, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise FeedbackParseError(f"{what}: {where}: expected an object, got {type(value).__name__}")
    return value


def _str(obj: Mapping[str, Any], key: str, where: str, what: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise FeedbackParseError(f"{what}: {where}{key}: expected a non-empty string, got {_short(value)}")
    return value.strip()[:_TEXT_CAP]


def _count(obj: Mapping[str, Any], key: str, where: str, what: str, *, default: int | None = None) -> int:
    value = obj.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_EPOCH:
        raise FeedbackParseError(f"{what}: {where}{key}: expected a whole number >= 0, got {_short(value)}")
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def rfc3339(value: Any, where: str, what: str) -> int:
    """An RFC 3339 date-time -> Unix seconds (a time without an offset is read as UTC)."""
    if not isinstance(value, str) or len(value) > 40:
        raise FeedbackParseError(f"{what}: {where}: expected an RFC 3339 date-time, got {_short(value)}")
    text = value.strip()
    if text[-1:] in ("z", "Z"):
        text = text[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise FeedbackParseError(f"{what}: {where}: expected an RFC 3339 date-time, got {_short(value)}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    try:
        seconds = int(when.timestamp())
    except (OverflowError, ValueError, OSError):
        raise FeedbackParseError(f"{what}: {where}: date-time out of range: {_short(value)}") from None
    if seconds < 0:
        raise FeedbackParseError(f"{what}: {where}: date-time before 1970: {_short(value)}")
    return seconds


def parse_tlsrpt(content: bytes) -> TlsReport:
    """An SMTP TLS report (inflated JSON) -> TlsReport."""
    what = "TLS report"
    try:
        data = json.loads(content)
    except RecursionError:
        raise FeedbackParseError(f"{what}: JSON nested too deep") from None
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError, int() digit limit
        raise FeedbackParseError(f"{what}: not valid JSON ({str(err)[:120]})") from None
    top = _obj(data, "the report", what)
    dates = _obj(top.get("date-range"), "date-range", what)
    begin = rfc3339(dates.get("start-datetime"), "date-range/start-datetime", what)
    end = rfc3339(dates.get("end-datetime"), "date-range/end-datetime", what)
    if end < begin:
        raise FeedbackParseError(f"{what}: date-range ends before it starts")
    raw_policies = top.get("policies")
    if not isinstance(raw_policies, list):
        raise FeedbackParseError(f"{what}: policies: expected a list, got {_short(raw_policies)}")
    policies = []
    for i, raw in enumerate(raw_policies):
        w = f"policies[{i}]/"
        entry = _obj(raw, f"policies[{i}]", what)
        pol = _obj(entry.get("policy"), f"{w}policy", what)
        summary = _obj(entry.get("summary"), f"{w}summary", what)
        details = entry.get("failure-details", [])
        if not isinstance(details, list):
            raise FeedbackParseError(f"{what}: {w}failure-details: expected a list, got {_short(details)}")
        failures = []
        for j, d in enumerate(details):
            dw = f"{w}failure-details[{j}]/"
            detail = _obj(d, dw.rstrip("/"), what)
            failures.append((_str(detail, "result-type", dw, what).lower(),
                             _count(detail, "failed-session-count", dw, what)))
        policies.append(TlsPolicy(
            policy_type=_str(pol, "policy-type", f"{w}policy/", what).lower(),
            policy_domain=_str(pol, "policy-domain", f"{w}policy/", what).lower().rstrip("."),
            success=_count(summary, "total-successful-session-count", f"{w}summary/", what),
            failure=_count(summary, "total-failure-session-count", f"{w}summary/", what),
            failures=tuple(failures),
        ))
    return TlsReport(
        org_name=_str(top, "organization-name", "", what),
        report_id=_str(top, "report-id", "", what),
        begin=begin,
        end=end,
        policies=tuple(policies),
    )
