import sys

from madis_stereo.cli import main

sys.exit(main())
