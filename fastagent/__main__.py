"""``python -m fastagent`` is the ``fastagent`` command."""

import sys

from .cli import main

sys.exit(main())
