"""The project's resources as definitions.py builds them, from the test's own environment (see conftest.py)."""

from engagement_pipeline.resources import resources_for
from engagement_pipeline.settings import Settings


def project_resources(**overrides) -> dict:
    """The resources definitions.py would build from this test's environment, with `overrides` swapped in."""
    return {**resources_for(Settings.from_environment()), **overrides}
