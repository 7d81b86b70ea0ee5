"""The sink's policy service: reply table precedence, concurrency bookkeeping, /proc/net/tcp parsing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sendfleet.lab import sinkpolicy
from sendfleet.lab.sinkpolicy import Concurrency, PeakCounter, pick_reply

A, B = "198.51.100.32", "198.51.100.33"


def test_reply_precedence_client_address_then_client_domain_then_address_then_domain() -> None:
    table = {
        (None, "gmail.test"): "450 domain",
        (None, "vip@gmail.test"): "451 address",
        (A, "gmail.test"): "421 client domain",
        (A, "vip@gmail.test"): "452 client address",
    }
    assert pick_reply(table, A, "VIP@Gmail.test") == "452 client address"
    assert pick_reply(table, A, "x@gmail.test") == "421 client domain"
    assert pick_reply(table, B, "vip@gmail.test") == "451 address"
    assert pick_reply(table, B, "x@gmail.test") == "450 domain"
    assert pick_reply(table, B, "x@yahoo.test") is None
    assert pick_reply({(A, "gmail.test"): "421 x"}, B, "x@gmail.test") is None  # another client: no match
    assert pick_reply({("2001:db8::1", "gmail.test"): "421 x"}, "2001:DB8:0::1", "x@gmail.test") == "421 x"


def test_table_round_trips_and_rejects_bad_rows() -> None:
    table = {(None, "gmail.test"): "421 4.7.28 unusual rate", (A, "bob@yahoo.test"): "DEFER_IF_PERMIT"}
    assert sinkpolicy.parse_table(sinkpolicy.render_table(table)) == table
    assert sinkpolicy.parse_table("") == {}
    with pytest.raises(ValueError, match="4xx or 5xx"):
        sinkpolicy.check_action("250 2.1.5 ok")
    with pytest.raises(ValueError, match="recipient domain or address"):
        sinkpolicy.normalise_target("@gmail.test")
    with pytest.raises(ValueError, match="client IP"):
        sinkpolicy.normalise_ip("mta1.lab.test")
    assert not sinkpolicy.accepts("421 4.7.0 later") and sinkpolicy.accepts(None) and sinkpolicy.accepts("OK")


def test_a_transaction_counts_once_per_domain_until_it_ends() -> None:
    c = Concurrency()
    c.recipient(0.0, "t1", "s1", A, "gmail.test")
    c.recipient(0.1, "t1", "s1", A, "Gmail.Test.")  # same transaction, same domain
    c.recipient(0.2, "t1", "s1", A, "yahoo.test")
    c.recipient(0.3, "t2", "s2", A, "gmail.test")
    c.recipient(0.4, "t3", "s3", B, "gmail.test")
    assert c.open_counts() == {(A, "gmail.test"): 2, (A, "yahoo.test"): 1, (B, "gmail.test"): 1}
    c.end("t1")
    c.end("t1")  # an end seen twice (END-OF-MESSAGE, then the connection closing) counts once
    c.end("unknown")
    assert c.open_counts() == {(A, "gmail.test"): 1, (B, "gmail.test"): 1}
    assert c.peaks() == {(A, "gmail.test"): 2, (A, "yahoo.test"): 1, (B, "gmail.test"): 1}


def test_the_next_transaction_of_a_session_ends_the_previous_one() -> None:
    c = Concurrency()
    c.recipient(0.0, "t1", "s1", A, "gmail.test")
    c.recipient(1.0, "t2", "s1", A, "gmail.test")  # RSET + MAIL we did not hear about: t1 is over
    assert c.open_counts() == {(A, "gmail.test"): 1}
    c.end_session("s1")  # the session's MAIL
    assert c.open_counts() == {} and c.peaks() == {(A, "gmail.test"): 1}


def test_closed_connections_end_their_transactions_but_younger_ones_are_kept() -> None:
    c = Concurrency()
    c.recipient(1.0, "t1", f"{A} 40001", A, "gmail.test")
    c.recipient(2.0, "t2", f"{A} 40002", A, "gmail.test")
    c.recipient(3.0, "t3", "pid 1f", A, "gmail.test")  # known by smtpd process only: never judged by /proc
    assert c.end_closed(alive=set(), snapshot_at=1.5) == ["t1"]  # t2 may be younger than the snapshot
    assert c.open_counts() == {(A, "gmail.test"): 2}
    assert c.end_closed(alive={f"{A} 40002"}, snapshot_at=5.0) == []


def test_stale_transactions_expire() -> None:
    c = Concurrency(stale_after=60)
    c.recipient(0.0, "t1", "s1", A, "gmail.test")
    c.recipient(50.0, "t2", "s2", A, "gmail.test")
    assert c.expire(59.0) == []
    assert c.expire(60.5) == ["t1"]
    assert c.open_counts() == {(A, "gmail.test"): 1}


def test_reset_restarts_each_peak_from_what_is_open() -> None:
    c = Concurrency()
    for i in range(3):
        c.recipient(0.0, f"t{i}", f"s{i}", A, "gmail.test")
    c.recipient(0.0, "y", "sy", A, "yahoo.test")
    c.end("t0")
    c.end("t1")
    c.end("y")
    assert c.peaks(reset=True) == {(A, "gmail.test"): 3, (A, "yahoo.test"): 1}
    assert c.peaks() == {(A, "gmail.test"): 1}
    c.end("t2")
    c.peaks(reset=True)
    assert c.peaks() == {}


def test_connection_peaks() -> None:
    p = PeakCounter()
    p.sample({A: 2, B: 1})
    p.sample({A: 4})
    p.sample({A: 1})
    assert p.peaks(reset=True) == {A: 4, B: 1}
    assert p.peaks() == {A: 1}


PROC_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0019 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 146433C6:0019 206433C6:9C41 01 00000000:00000000 00:00000000 00000000     0        0 2 1
   2: 146433C6:0019 216433C6:9C42 06 00000000:00000000 00:00000000 00000000     0        0 3 1
   3: 146433C6:0016 206433C6:9C43 01 00000000:00000000 00:00000000 00000000     0        0 4 1
"""
PROC_TCP6 = """\
  sl  local_address                         remote_address                        st
   0: B80D012000005F000000000014000000:0019 B80D012000005F000000000020000000:A000 01 0
   1: 0000000000000000FFFF0000146433C6:0019 0000000000000000FFFF0000226433C6:A001 01 0
"""


def test_proc_net_tcp_lists_established_port_25_peers() -> None:
    assert sinkpolicy.parse_proc_net_tcp(PROC_TCP) == [("198.51.100.32", 40001)]
    assert sinkpolicy.parse_proc_net_tcp(PROC_TCP6) == [("2001:db8:5f::20", 40960), ("198.51.100.34", 40961)]
    assert sinkpolicy.count_by_ip([(A, 1), (A, 2), (B, 3)]) == {A: 2, B: 1}


def test_session_is_the_client_address_and_port_else_the_smtpd_process() -> None:
    assert sinkpolicy.session_key({"client_address": A, "client_port": "40001", "instance": "1f.2.3.0"}) \
        == f"{A} 40001"
    assert sinkpolicy.session_key({"client_address": A, "instance": "1f.2.3.0"}) == "pid 1f"


def request(state: str, instance: str, port: str, client: str = A, rcpt: str = "") -> dict[str, str]:
    return {"protocol_state": state, "instance": instance, "client_address": client, "client_port": port,
            "recipient": rcpt}


def test_policy_answers_from_the_table_as_soon_as_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "replies.json"
    state = sinkpolicy._State(str(path))  # no file yet: every recipient is accepted
    assert state.answer(request("RCPT", "t1", "1", rcpt="x@gmail.test")) == "DUNNO"
    path.write_text(sinkpolicy.render_table({(A, "gmail.test"): "421 4.7.28 unusual rate"}))
    assert state.answer(request("RCPT", "t2", "2", rcpt="x@gmail.test")) == "421 4.7.28 unusual rate"
    assert state.answer(request("RCPT", "t3", "3", client=B, rcpt="x@gmail.test")) == "DUNNO"
    tmp = tmp_path / "new.json"
    tmp.write_text(sinkpolicy.render_table({}))
    os.replace(tmp, path)  # the controller's atomic write
    assert state.answer(request("RCPT", "t4", "4", rcpt="x@gmail.test")) == "DUNNO"
    path.write_text("{not json")  # a broken table keeps the last good one
    assert state.answer(request("RCPT", "t5", "5", rcpt="x@gmail.test")) == "DUNNO"
    # refused recipients do not count; END-OF-MESSAGE and MAIL end transactions
    assert state.concurrency.open_counts() == {(A, "gmail.test"): 3, (B, "gmail.test"): 1}
    state.answer(request("END-OF-MESSAGE", "t1", "1"))
    state.answer(request("MAIL", "t6", "4"))
    assert state.concurrency.open_counts() == {(A, "gmail.test"): 1, (B, "gmail.test"): 1}


def test_groups_count_a_transaction_once_per_client_and_group() -> None:
    c = Concurrency()
    c.set_groups({"gmail.test": "gmail", "acme.test": "gmail", "yahoo.test": "yahoo"})
    c.recipient(0.0, "t1", "s1", A, "gmail.test")
    c.recipient(0.1, "t1", "s1", A, "acme.test")  # the same transaction, another domain of the group: once
    c.recipient(0.2, "t2", "s2", A, "acme.test")
    c.recipient(0.3, "t3", "s3", B, "yahoo.test")
    c.recipient(0.4, "t4", "s4", A, "smallbiz.test")  # in no group
    assert c.group_peaks() == {(A, "gmail"): 2, (B, "yahoo"): 1}
    c.end("t1")
    c.recipient(0.5, "t5", "s5", A, "gmail.test")
    assert c.group_peaks(reset=True) == {(A, "gmail"): 2, (B, "yahoo"): 1}
    c.end("t2")
    c.end("t5")
    c.end("t3")
    assert c.group_peaks() == {(A, "gmail"): 2, (B, "yahoo"): 1}  # a reset restarts from what was open
    c.set_groups({"gmail.test": "gmail"})
    assert c.group_peaks() == {}
