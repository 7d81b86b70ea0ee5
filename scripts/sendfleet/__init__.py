"""sendfleet: vet, provision and verify a fleet of dedicated outbound mail senders."""

__version__ = "0.1.0"
