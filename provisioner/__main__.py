"""Entry point of `python -m provisioner`, the same command line as `course-vm`."""

import sys

from provisioner.cli.main import main

sys.exit(main())
