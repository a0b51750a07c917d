"""The Modal suite's two clients: ``FakeModal`` serving tests/integration/_modal_functions.py
(always), and the real ``modal`` module against a real account's deployed test app (only with
``NSAI_WORK_MODAL_LIVE=1``: ``make test-modal``, see docs/modal.md)."""

from __future__ import annotations

import os
from typing import Any, Final

import pytest

from nsai_work.testing import FakeModal
from tests.integration._modal_functions import FUNCTIONS

LIVE: Final = os.environ.get("NSAI_WORK_MODAL_LIVE") == "1"
#: The deployed test app's name (tests/modal_app/app.py deploys it under this name).
APP: Final = os.environ.get("NSAI_WORK_MODAL_APP", "nsai-work-test")
ENVIRONMENT: Final = os.environ.get("NSAI_WORK_MODAL_ENVIRONMENT") or None
SKIP_LIVE: Final = (
    "live Modal test skipped: NSAI_WORK_MODAL_LIVE is not 1. Modal's cloud cannot be reached "
    "from here (no network but package registries), so the suite runs on work.testing.FakeModal; "
    "to run it against a real account: NSAI_WORK_MODAL_LIVE=1 make test-modal (docs/modal.md)"
)
CLIENTS: Final = ("fake", "live")


def client(kind: str) -> Any:
    """The fake, or (live runs only) the real ``modal`` module."""
    if kind == "live":
        if not LIVE:
            pytest.skip(SKIP_LIVE)
        import modal

        return modal
    return FakeModal({APP: FUNCTIONS})
