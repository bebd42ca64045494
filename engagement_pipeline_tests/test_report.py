"""The morning report: a self-contained page per day, the same plots and numbers in Dagster.

Runs on the small real world of monitoring_fixtures.py (a champion, days
after its training period), materializing `user_predictions` and
`engagement_report` for a day as the UI would.
"""

import re

import dagster as dg
import numpy as np
import pyarrow.parquet as pq
import pytest

from engagement_pipeline.definitions import defs
from engagement_pipeline.monitoring import plots
from engagement_pipeline.monitoring.report import engagement_report, report_path
from engagement_pipeline.partitions import daily_partitions
from engagement_pipeline.scoring.assets import user_predictions
from engagement_pipeline_tests.monitoring_fixtures import ORDINARY_DAYS
from engagement_pipeline_tests.project import project_resources

DAY = ORDINARY_DAYS[3]
SECTIONS = ("who_to_reach", "dropoff", "realized_quality", "drift")


@pytest.fixture
def home(world_home):
    return world_home


def materialize(assets, day: str, **kwargs) -> dg.ExecuteInProcessResult:
    return dg.materialize(assets, partition_key=day, resources=project_resources(), **kwargs)


def test_the_report_is_one_self_contained_page_with_every_section(home):
    materialize([user_predictions, engagement_report], DAY)
    page_path = report_path(home / "reports", DAY)
    assert page_path == home / "reports" / f"date={DAY}" / "report.html"
    page = page_path.read_text()

    images = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == len(SECTIONS)
    for section in SECTIONS:
        assert f'<section id="{section}">' in page
    # nothing to fetch: no external source, stylesheet or script
    assert not re.search(r'(src|href)="(?!data:)', page)
    assert "<script" not in page and "<link" not in page
    assert [p.name for p in page_path.parent.iterdir()] == ["report.html"]  # no temporary left behind

    # who to reach: the day's lowest P(continue 10 min) first, by user_key, in that order
    frame = (
        pq.read_table(project_resources()["storage"].prediction_file(DAY))
        .to_pandas()
        .sort_values(["p_continue_10m", "user_key"])
    )
    who = page.split('<section id="who_to_reach">')[1].split("</section>")[0]
    listed = re.findall(r"<tr><td>([^<]+)</td><td>(0\.\d{3})</td>", who)
    assert [key for key, _ in listed] == frame["user_key"].head(25).tolist()
    assert [float(p) for _, p in listed] == pytest.approx(frame["p_continue_10m"].head(25).round(3).tolist())
    assert "engagement-lstm v1" in page and DAY in page


def test_the_report_metadata_carries_numbers_for_the_plots_tab_and_the_plots(home):
    result = materialize([user_predictions, engagement_report], DAY)
    metadata = result.asset_materializations_for_node("engagement_report")[0].metadata
    p = pq.read_table(project_resources()["storage"].prediction_file(DAY)).column("p_continue_10m").to_numpy()
    assert metadata["active_users"].value == len(p)
    assert metadata["at_risk_users"].value == int(np.sum(p < 0.5))
    for name in ("realized_roc_auc_10m", "realized_roc_auc_20m", "realized_roc_auc_30m", "max_psi"):
        assert isinstance(metadata[name], dg.FloatMetadataValue)
    assert 0.5 < metadata["realized_roc_auc_10m"].value < 1
    assert metadata["realized_day"].value == DAY
    assert 0 < metadata["share_of_sessions_past_10_min"].value < 1
    for section in SECTIONS:
        assert metadata[f"plot_{section}"].value.startswith(f"![{section}](data:image/png;base64,")


def test_a_quiet_day_still_gets_a_page(home):
    day = "2025-12-25"  # after the data: nobody was active
    result = materialize([user_predictions, engagement_report], day)
    page = report_path(home / "reports", day).read_text()
    assert "No volunteer was active this day." in page
    assert result.asset_materializations_for_node("engagement_report")[0].metadata["active_users"].value == 0


def test_a_day_not_scored_yet_fails_saying_what_to_materialize(home):
    result = materialize([engagement_report], DAY, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "materialize `user_predictions`" in failure.step_failure_data.error.to_string()


def test_the_report_follows_user_predictions_partition_by_partition():
    graph = defs.resolve_asset_graph()
    node = graph.get(dg.AssetKey("engagement_report"))
    assert node.partitions_def == daily_partitions
    assert dg.AssetKey("user_predictions") in node.parent_keys
    checks = {key.name for key in graph.asset_check_keys if key.asset_key == dg.AssetKey("user_predictions")}
    assert {"feature_drift", "realized_quality"} <= checks


def test_plots_are_png_even_with_nothing_to_draw():
    subtitle = plots.stamp("engagement-lstm", 1, "2025-09-01")
    empty = [
        plots.at_risk_png(np.empty(0), 10, 0, subtitle),
        plots.dropoff_png(np.arange(3), np.zeros(3), np.zeros(3), 0, 0, "none", 30, subtitle),
        plots.realized_quality_png([10], np.empty((0, 1)), np.empty((0, 1)), {}, {}, subtitle),
        plots.drift_png([], np.empty(0), np.empty(0), np.empty(0, bool), 0.25, subtitle),
    ]
    assert all(png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1_000 for png in empty)
    assert plots.stamp("engagement-lstm", 3, "2025-09-01") == "engagement-lstm v3 · 2025-09-01 (UTC)"
