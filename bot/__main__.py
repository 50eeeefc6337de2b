"""`python -m bot` is `repbot`."""

import sys

from .cli import main

sys.exit(main())
