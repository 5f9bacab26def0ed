"""``python -m radpipe`` is the ``radpipe`` command."""

import sys

from radpipe.cli import main

sys.exit(main())
