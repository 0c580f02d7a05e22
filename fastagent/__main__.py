"""``python -m fastagent`` is the ``fastagent`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
