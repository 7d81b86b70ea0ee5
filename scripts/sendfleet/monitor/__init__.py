"""The sender-side monitor installed by the dnsbl_monitor role (`python -m sendfleet.monitor`).

- `check`: re-vet this host's in-service sending IPs with the `sendfleet vet` engine and zones file,
  step the drain/restore state machine (sendfleet.core.drain), apply the pool selection to Postfix,
  write the state file, the Prometheus textfile and log every change with its evidence.
- `apply`: make Postfix's pool selection match the plan (warm-up weights) and the drained IPs.
- `delivery`: read Postfix's log since the last run and count sent/deferred/bounced per IP and provider.
- `dnsdrift`: on the monitoring host (monitoring role), the published DNS records against the plan
  (sendfleet.monitor.dnsdrift).

Needs only the standard library, dnspython and PyYAML on the host (Debian: python3-dnspython, python3-yaml).
"""
