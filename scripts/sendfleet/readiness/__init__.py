"""The I/O side of `sendfleet readiness`: submit tagged messages, collect them where they arrived, gather
DNS/DKIM/SPF evidence through the inventory's resolver. The verdicts are in `sendfleet.core.readiness`."""
