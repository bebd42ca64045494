"""The model's Dagster definitions: `engagement_model`. Training is never scheduled: it can move the champion."""

import dagster as dg

from engagement_pipeline.model.assets import engagement_model

defs = dg.Definitions(assets=[engagement_model])
