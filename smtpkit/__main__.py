"""``python -m smtpkit`` runs the command line (see ``smtpkit.cli``)."""

import sys

from .cli import main

sys.exit(main())
