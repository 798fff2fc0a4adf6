"""`python -m vlmzoo ...` runs the `vlmzoo` command."""
import sys

from vlmzoo.cli import main

if __name__ == "__main__":
    sys.exit(main())
