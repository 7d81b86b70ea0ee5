"""The end-to-end tests share the lab tests' session fixtures: `lab` (the lab is up) and `converged`
(scripts/main-job.sh --converge-only has run once in this session)."""

from tests.lab.conftest import converged, lab  # noqa: F401
