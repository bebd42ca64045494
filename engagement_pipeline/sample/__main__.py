"""python -m engagement_pipeline.sample: the `engagement generate` command."""

import sys

from engagement_pipeline.sample.command import main

sys.exit(main())
