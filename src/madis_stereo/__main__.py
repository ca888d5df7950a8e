"""``python -m madis_stereo``: the ``madis-stereo`` command line."""

import sys

from madis_stereo.app.cli import main

sys.exit(main())
