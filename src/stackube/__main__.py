"""`python3 -m stackube` is the `stackube` command."""

import sys

from stackube.cli import main

sys.exit(main())
