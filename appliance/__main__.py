"""Run the command line as `python -m appliance`."""

import sys

from .cli import main

sys.exit(main())
