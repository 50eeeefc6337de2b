"""`python -m bot` is `repbot`."""

import sys

from bot.cli import main

sys.exit(main())
