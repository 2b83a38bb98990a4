"""python3 -m twotower.client: the command-line client (twotower.client.cli)."""

import sys

from twotower.client.cli import main

sys.exit(main())
