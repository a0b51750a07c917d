"""``python -m nsai_work``: the ``nsai-work`` command (``version``, ``schema``, ``demo``)."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
