"""The feedback host's side of the feedback loop: `python -m sendfleet.feedback VERB`.

Postfix on the feedback host pipes every message sent to a bounce domain to `process` (DSNs, ARF complaints,
DMARC and TLS-RPT aggregate reports); the parsing is pure (`sendfleet.core.feedback`), this package does the I/O:
the configuration (`config`), the PostgreSQL store and the senders' suppression lookup (`store`), the pipe
entry point with its dead letters and metrics (`processor`) and the verbs the controller's CLI runs over SSH
(`__main__`: schema, process, suppression, report, metrics).
"""
