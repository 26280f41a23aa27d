"""``python -m jaxunlearn``: the same command line as the ``jaxunlearn`` script."""

import sys

from jaxunlearn.cli import main

sys.exit(main())
