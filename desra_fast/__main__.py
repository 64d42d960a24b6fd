"""``python -m desra_fast ...`` is the ``desra-fast`` command."""
import sys

from .cli import main

if __name__ == "__main__":  # worker processes import this module again under another name
    sys.exit(main())
