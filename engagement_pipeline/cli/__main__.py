"""`python -m engagement_pipeline.cli`: the `engagement` command with this interpreter."""

import sys

from engagement_pipeline.cli import main

sys.exit(main())
