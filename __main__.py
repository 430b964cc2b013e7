"""``python -m diffcamera`` is the ``diffcamera`` command."""
from .cli import main

raise SystemExit(main())
