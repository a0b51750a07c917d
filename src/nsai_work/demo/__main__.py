"""``python -m nsai_work.demo``."""

from . import main

raise SystemExit(main())
