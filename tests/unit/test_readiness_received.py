"""Received headers as the MTAs of seed mailboxes write them: readiness reads the client IP, HELO and TLS of the
hop from the fleet out of them. Each fixture is a header published as received, kept in its exact shape
(folding, spacing, comments); where it comes from is said above it. Addresses are kept except where the source
redacted them (then a documentation address stands in)."""

from __future__ import annotations

import pytest

from sendfleet.core.readiness import Hop, hop_from_fleet, parse_received

# Gmail (mx.google.com). Repository qianweicheng/hello-world, protocol/email/security/demo.md ("## Gmail").
GMAIL = (
    "from a27-116.smtp-out.us-west-2.amazonses.com (a27-116.smtp-out.us-west-2.amazonses.com. [54.240.27.116])\n"
    "        by mx.google.com with ESMTPS id s8si1925252pji.72.2020.01.31.19.11.48\n"
    "        for <weicheng@edison.tech>\n"
    "        (version=TLS1_2 cipher=ECDHE-RSA-AES128-SHA bits=128/128);\n"
    "        Fri, 31 Jan 2020 19:11:49 -0800 (PST)"
)

# Microsoft 365 / Outlook, the Exchange Online edge that takes the message from the sender, and the next hop
# inside Microsoft (IPv6 `(2603:...)` form). Repository linux-mailinglist-archives/xen-devel.lists.xenproject.org.0
# (public-inbox, file m), Message-ID <20240109215145.430207-10-stewart.hildebrand@amd.com>.
MICROSOFT_EDGE = (
    "from SATLEXMB04.amd.com (165.204.84.17) by\n"
    " BL6PEPF0001AB50.mail.protection.outlook.com (10.167.242.74) with Microsoft\n"
    " SMTP Server (version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256) id\n"
    " 15.20.7181.14 via Frontend Transport; Tue, 9 Jan 2024 21:53:54 +0000"
)
MICROSOFT_INTERNAL = (
    "from BL6PEPF0001AB50.namprd04.prod.outlook.com\n"
    " (2603:10b6:208:239:cafe::76) by MN2PR08CA0029.outlook.office365.com\n"
    " (2603:10b6:208:239::34) with Microsoft SMTP Server (version=TLS1_2,\n"
    " cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id 15.20.7159.23 via Frontend\n"
    " Transport; Tue, 9 Jan 2024 21:53:55 +0000"
)

# Yahoo, the mta form: the leading 127.0.0.1 is Yahoo's own proxy, the client is the address after the EHLO
# comment, in parentheses or brackets. Repository SpamExperts/OrangeAssassin,
# tests/functional/test_plugins/test_relay_country.py (MSG_PARENTHESES and MSG_IPV6).
YAHOO_MTA = (
    "from 127.0.0.1  (EHLO m1.util24.eu) (213.133.99.176)\n"
    "  by mta1329.mail.bf1.yahoo.com with SMTPS; Fri, 29 Jan 2016 05:57:28 +0000"
)
YAHOO_MTA_V6 = (
    "from 127.0.0.1  (EHLO m1.util24.eu) [2a01:4f8:a0:9208::2]\n"
    "  by mta1329.mail.bf1.yahoo.com with SMTPS; Fri, 29 Jan 2016 05:57:28 +0000"
)
# The same form over plain SMTP, https://itecnotes.com/server/what-does-this-received-email-header-line-mean
# (the source redacted the client to x.x.x.x: 198.51.100.70 stands in).
YAHOO_MTA_PLAIN = (
    "from 127.0.0.1  (EHLO hostname.example.com) (198.51.100.70)\n"
    "  by mta1199.mail.gq1.yahoo.com with SMTP; Tue, 09 Jul 2013 13:53:55 -0700"
)
# Yahoo, the atlas form (2020 on): the client address first, the HELO in the EHLO comment. From the
# challenge message of the TryHackMe room "The Greenholt Phish" (https://tryhackme.com/room/phishingemails5fgjlzxc)
# as quoted in public write-ups; the source redacted the client to x.x.x.x, 198.51.100.70 stands in.
YAHOO_ATLAS = (
    "from 198.51.100.70 (EHLO sub.redacted.com)\n"
    " by atlas125.free.mail.bf1.yahoo.com with SMTPs; Wed, 10 Jun 2020 05:58:55 +0000"
)
# The hop before it in the same message (mta form, plain SMTP, same redaction).
YAHOO_ATLAS_PLAIN = (
    "from 10.197.41.148  (EHLO sub.redacted.com) (198.51.100.70)\n"
    "  by mta4212.mail.bf1.yahoo.com with SMTP; Wed, 10 Jun 2020 05:58:54 +0000"
)

# Exim (helo= given when it differs from the verified host name, [IP]:port, TLS in the with clause).
# Repository linux-mailinglist-archives/qemu-devel.nongnu.org.0 (public-inbox, file m), Message-Id
# <1562085328-5126-7-git-send-email-aleksandar.markovic@rt-rk.com>.
EXIM = (
    "from mx2.rt-rk.com ([89.216.37.149]:59848 helo=mail.rt-rk.com)\n"
    " by eggs.gnu.org with esmtps (TLS1.0:DHE_RSA_AES_256_CBC_SHA1:32)\n"
    " (Exim 4.71) (envelope-from <aleksandar.markovic@rt-rk.com>)\n"
    " id 1hiLlL-0007pm-Nc\n"
    " for qemu-devel@nongnu.org; Tue, 02 Jul 2019 12:36:13 -0400"
)
# Exim without a verified host name (the address first, port= and helo= in the comment), and Exim when the HELO
# is the verified host name (no helo=). Repository linux-mailinglist-archives/qemu-devel.nongnu.org.1, Message-Id
# <20220225172021.3493923-14-alex.bennee@linaro.org>.
EXIM_NO_RDNS = (
    "from [2a00:1450:4864:20::531] (port=41919\n"
    " helo=mail-ed1-x531.google.com)\n"
    " by eggs.gnu.org with esmtps (TLS1.2:ECDHE_RSA_AES_128_GCM_SHA256:128)\n"
    " (Exim 4.90_1) (envelope-from <alex.bennee@linaro.org>)\n"
    " id 1nNeGp-0002PF-Io\n"
    " for qemu-devel@nongnu.org; Fri, 25 Feb 2022 12:20:59 -0500"
)
EXIM_HELO_IS_RDNS = (
    "from eggs.gnu.org ([209.51.188.92]:40018)\n"
    " by lists.gnu.org with esmtps (TLS1.2:ECDHE_RSA_AES_256_GCM_SHA384:256)\n"
    " (Exim 4.90_1) (envelope-from <alex.bennee@linaro.org>)\n"
    " id 1nNeH5-0004Jo-UZ\n"
    " for qemu-devel@nongnu.org; Fri, 25 Feb 2022 12:20:59 -0500"
)

# Postfix: the lab's sink, and a public one. Repository linux-mailinglist-archives/qemu-devel.nongnu.org.1, same
# message as EXIM_NO_RDNS (the list's own archive host).
POSTFIX = (
    "from lists.gnu.org (lists.gnu.org [209.51.188.17])\n"
    "\tby mail.lfdr.de (Postfix) with ESMTPS id 7054B4C4CD8\n"
    "\tfor <lists+qemu-devel@lfdr.de>; Fri, 25 Feb 2022 18:48:16 +0100 (CET)"
)


@pytest.mark.parametrize(
    ("header", "hop"),
    [
        (GMAIL, Hop("a27-116.smtp-out.us-west-2.amazonses.com", "54.240.27.116", "TLSv1.2")),
        (MICROSOFT_EDGE, Hop("satlexmb04.amd.com", "165.204.84.17", "TLSv1.2")),
        (MICROSOFT_INTERNAL, Hop("bl6pepf0001ab50.namprd04.prod.outlook.com", "2603:10b6:208:239:cafe::76",
                                 "TLSv1.2")),
        (YAHOO_MTA, Hop("m1.util24.eu", "213.133.99.176", "TLS")),
        (YAHOO_MTA_V6, Hop("m1.util24.eu", "2a01:4f8:a0:9208::2", "TLS")),
        (YAHOO_MTA_PLAIN, Hop("hostname.example.com", "198.51.100.70", None)),
        (YAHOO_ATLAS, Hop("sub.redacted.com", "198.51.100.70", "TLS")),
        (YAHOO_ATLAS_PLAIN, Hop("sub.redacted.com", "198.51.100.70", None)),
        (EXIM, Hop("mail.rt-rk.com", "89.216.37.149", "TLSv1.0")),
        (EXIM_NO_RDNS, Hop("mail-ed1-x531.google.com", "2a00:1450:4864:20::531", "TLSv1.2")),
        (EXIM_HELO_IS_RDNS, Hop("eggs.gnu.org", "209.51.188.92", "TLSv1.2")),
        (POSTFIX, Hop("lists.gnu.org", "209.51.188.17", "TLS")),
    ],
    ids=["gmail", "microsoft-edge", "microsoft-internal", "yahoo-mta", "yahoo-mta-v6", "yahoo-mta-plain", "yahoo-atlas",
         "yahoo-atlas-plain", "exim", "exim-no-rdns", "exim-helo-is-rdns", "postfix"],
)
def test_published_received_headers(header: str, hop: Hop) -> None:
    assert parse_received(header) == hop


def test_the_receiving_servers_address_is_never_taken_for_the_client() -> None:
    """Microsoft names its own server's address after `by`; only the `from` clause names the client."""
    hop = parse_received(MICROSOFT_EDGE)
    assert hop is not None and hop.ip != "10.167.242.74"
    assert parse_received("from mta1.shop.test by mx.test (198.51.100.99) with ESMTP") is None


def test_microsoft_without_tls_and_headers_without_a_client() -> None:
    plain = MICROSOFT_EDGE.replace(" (version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)", "")
    hop = parse_received(plain)
    assert hop is not None and hop.tls_protocol is None
    assert parse_received("by localhost with LMTP") is None
    assert parse_received("from unknown (HELO localhost) (someone@somewhere with login) by smtp.test with SMTP") is None


def test_the_hop_from_the_fleet_in_a_microsoft_chain() -> None:
    """Newest first: Microsoft's internal hops come before the edge's record of the fleet's IP."""
    received = [MICROSOFT_INTERNAL.replace("2603:10b6:208:239:cafe::76", "2603:10b6:208:239:cafe::77"),
                MICROSOFT_INTERNAL, MICROSOFT_EDGE.replace("165.204.84.17", "198.51.100.70")]
    hop = hop_from_fleet(received, ["198.51.100.70", "198.51.100.71"])
    assert hop == Hop("satlexmb04.amd.com", "198.51.100.70", "TLSv1.2")


def test_the_hop_from_the_fleet_in_a_yahoo_chain() -> None:
    hop = hop_from_fleet([YAHOO_ATLAS, YAHOO_ATLAS_PLAIN], ["198.51.100.70"])
    assert hop == Hop("sub.redacted.com", "198.51.100.70", "TLS")
