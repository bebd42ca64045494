"""The morning report: a self-contained page per day, the same plots and numbers in Dagster.

Runs on the small real world of monitoring_fixtures.py (a champion, days
after its training period), materializing `user_predictions`, its checks and
`engagement_report` for a day as the nightly job does (DAILY).
"""

import datetime as dt
import re

import dagster as dg
import numpy as np
import pyarrow.parquet as pq
import pytest

from engagement_pipeline.definitions import defs
from engagement_pipeline.monitoring import plots
from engagement_pipeline.monitoring.checks import monitoring_checks
from engagement_pipeline.monitoring.report import engagement_report, report_path
from engagement_pipeline.partitions import daily_partitions
from engagement_pipeline.scoring.assets import user_predictions
from engagement_pipeline_tests.monitoring_fixtures import ORDINARY_DAYS
from engagement_pipeline_tests.project import project_resources

DAY = ORDINARY_DAYS[3]
SECTIONS = ("who_to_reach", "dropoff", "realized_quality", "drift")
DAILY = [user_predictions, *monitoring_checks, engagement_report]  # a night's run: the file, its checks, the report


@pytest.fixture
def home(world_home):
    return world_home


def materialize(assets, day: str, **kwargs) -> dg.ExecuteInProcessResult:
    return dg.materialize(assets, partition_key=day, resources=project_resources(), **kwargs)


def test_the_report_is_one_self_contained_page_with_every_section(home):
    materialize(DAILY, DAY)
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

    # who to reach: the volunteers in the lowest tenth of P(continue 10 min) of the scored volunteer-days (only
    # this day is scored in this home), lowest first, those with a user id; the hashed ones only counted
    frame = (
        pq.read_table(project_resources()["storage"].prediction_file(DAY))
        .to_pandas()
        .sort_values(["p_continue_10m", "user_key"])
    )
    threshold = np.quantile(frame["p_continue_10m"], 0.1)
    flagged = frame[frame["p_continue_10m"] <= threshold]
    reachable = flagged[~flagged["user_key"].str.startswith("h:")]
    assert len(reachable)  # hashed keys among the flagged: test_the_drift_away_sentence_says_who_cannot_be_contacted
    who = page.split('<section id="who_to_reach">')[1].split("</section>")[0]
    listed = re.findall(r"<tr><td>([^<]+)</td><td>(0\.\d{3})</td>", who)
    assert [key for key, _ in listed] == reachable["user_key"].head(25).tolist()
    assert [float(p) for _, p in listed] == pytest.approx(reachable["p_continue_10m"].head(25).round(3).tolist())
    assert "engagement-lstm v1" in page and DAY in page

    # the first screen: four sentences, each naming its day, before any plot or metric name
    lead = page.split('<section id="summary" class="lead">')[1].split("</section>")[0]
    sentences = re.findall(r"<li[^>]*>([^<]+)</li>", lead)
    assert len(sentences) == 4, sentences
    assert sentences[0].startswith(f"On {DAY}, {len(frame)} volunteers were active (")
    assert f"{len(flagged)} volunteers active on {DAY} are the most likely to drift away" in sentences[1]
    hashed = len(flagged) - len(reachable)
    expected = (
        f"{len(reachable)} with a Zooniverse user id are listed below; {hashed} were not logged in"
        if hashed
        else "all have a Zooniverse user id and are listed below"
    )
    assert expected in sentences[1], sentences[1]
    assert f"at or below {threshold:.3f}" in sentences[1]
    assert "the latest day whose outcomes are all known" in sentences[2] and "tested" in sentences[2]
    assert sentences[3].startswith(f"The inputs of {DAY} ")
    assert "roc_auc" not in lead and "PSI" not in lead and "_ci_" not in lead
    assert page.index('id="summary"') < page.index("<img")


def test_the_report_metadata_carries_numbers_for_the_plots_tab_and_the_plots(home):
    result = materialize(DAILY, DAY)
    metadata = result.asset_materializations_for_node("engagement_report")[0].metadata
    p = pq.read_table(project_resources()["storage"].prediction_file(DAY)).column("p_continue_10m").to_numpy()
    assert metadata["active_users"].value == len(p)
    assert metadata["at_risk_users"].value == int(np.sum(p < 0.5))
    assert metadata["likely_to_drift_away"].value == int(np.sum(p <= np.quantile(p, 0.1)))
    assert metadata["drift_away_threshold"].value == pytest.approx(np.quantile(p, 0.1))
    for name in ("realized_roc_auc_10m", "realized_roc_auc_20m", "realized_roc_auc_30m", "max_psi"):
        assert isinstance(metadata[name], dg.FloatMetadataValue)
    assert 0.5 < metadata["realized_roc_auc_10m"].value < 1
    assert metadata["realized_day"].value == DAY
    assert 0 < metadata["share_of_sessions_past_10_min"].value < 1
    for section in SECTIONS:
        assert metadata[f"plot_{section}"].value.startswith(f"![{section}](data:image/png;base64,")


def test_a_quiet_day_still_gets_a_page(home):
    day = "2025-12-25"  # after the data: nobody was active
    result = materialize(DAILY, day)
    page = report_path(home / "reports", day).read_text()
    assert f"On {day} no volunteer classified." in page
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
        plots.realized_quality_png([10], {}, {}, {}, subtitle),
        plots.drift_png([], np.empty(0), np.empty(0), np.empty(0, bool), 0.25, subtitle),
    ]
    assert all(png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1_000 for png in empty)
    assert plots.stamp("engagement-lstm", 3, "2025-09-01") == "engagement-lstm v3 · 2025-09-01 (UTC)"


def realized_day(realized: dict, test: dict, known: int = 500):
    import datetime as dt

    from engagement_pipeline.monitoring.checks import RealizedQuality

    return RealizedQuality(
        dt.date(2025, 9, 13), "engagement-lstm v1", [10, 20, 30], realized=realized, test=test,
        known_outcomes={w: known for w in (10, 20, 30)},
    )  # fmt: skip


TESTED = {10: (0.78, 0.74, 0.81), 20: (0.80, 0.76, 0.83), 30: (0.81, 0.77, 0.84)}


def test_the_quality_sentence_says_as_tested_or_where_the_model_did_worse():
    from engagement_pipeline.monitoring.report_text import quality_sentence

    day = "On 2025-09-13, the latest day whose outcomes are all known, "
    as_tested = realized_day({10: (0.76, 0.60, 0.88), 20: (0.79, 0.66, 0.89), 30: (0.80, 0.58, 0.89)}, TESTED)
    assert quality_sentence(as_tested) == day + "the model did as well as tested."
    # the day: 20 min 0.477, its interval wholly under the test interval; 30 min too
    worse = realized_day({10: (0.70, 0.60, 0.80), 20: (0.477, 0.40, 0.55), 30: (0.50, 0.41, 0.60)}, TESTED)
    assert quality_sentence(worse).startswith(
        day + "the model did worse than tested at 20 and 30 minutes; as tested at 10 minutes."
    )
    few = realized_day({w: (0.9, 0.0, 1.0) for w in (10, 20, 30)}, TESTED, known=3)
    assert quality_sentence(few) == day + "too few volunteers stopped or went on to judge the model."


def test_the_drift_away_sentence_says_who_cannot_be_contacted_and_states_the_rule():
    from engagement_pipeline.monitoring.report_text import DriftAwayRule, contactable, drift_away_sentence

    rule = DriftAwayRule(10, 0.0712, 0.1, 171, "2025-09-12", "2025-09-14")
    keys = ["3223847", "h:d4f50318aa00bb11cc22dd33", "272519"]
    assert contactable(keys).tolist() == [True, False, True]
    sentence = drift_away_sentence("2025-09-14", rule, 3, 2)
    assert sentence.startswith("3 volunteers active on 2025-09-14 are the most likely to drift away: 2 with a ")
    assert (
        "1 was not logged in (or the export has no user_id), and this export gives no way to contact them" in sentence
    )
    assert sentence.endswith(
        "Rule: the lowest tenth of P(still working 10 minutes after their last classification) among the 171 "
        "volunteer-days scored from 2025-09-12 to 2025-09-14: at or below 0.071."
    )
    all_hashed = drift_away_sentence("2025-09-14", rule, 2, 0)
    assert "none has a Zooniverse user id" in all_hashed


def test_intervals_read_as_intervals():
    from engagement_pipeline.monitoring.report_text import interval_text

    assert interval_text(0.477, 0.0, 0.684) == "0.48 (0.00 to 0.68)"
    assert interval_text(float("nan"), float("nan"), float("nan")) == "none"
    assert interval_text(0.8, 0.8, 0.8) == "0.80"  # a run that logged no interval


def test_a_home_without_sessions_and_labels_names_the_assets_to_materialize_first(home):
    materialize([user_predictions], DAY)  # scored while the tables were there
    with project_resources()["warehouse"].connect() as con:
        con.execute("drop table labels")
        con.execute("drop table sessions")
    result = materialize(DAILY, DAY, raise_on_error=False)
    failures = {e.step_key: e.step_failure_data.error.to_string() for e in result.all_events if e.is_step_failure}
    # the check the report reads fails first, and the report (after it) does not run
    assert set(failures) == {"user_predictions_realized_quality"}, failures
    assert not result.asset_materializations_for_node("engagement_report")
    alone = materialize([engagement_report], DAY, raise_on_error=False)  # the report on its own says the same
    failures |= {e.step_key: e.step_failure_data.error.to_string() for e in alone.all_events if e.is_step_failure}
    assert set(failures) == {"engagement_report", "user_predictions_realized_quality"}, failures
    for message in failures.values():
        assert "MissingUpstreamError: The warehouse has no sessions, labels table yet" in message
        assert "materialize `sessions`, `labels` first" in message
    with project_resources()["warehouse"].connect() as con:
        con.execute("drop table features")
    scoring = materialize([user_predictions], DAY, raise_on_error=False)
    failure = next(e for e in scoring.all_events if e.is_step_failure)
    assert "materialize `features` first (in the Dagster UI, select it" in failure.step_failure_data.error.to_string()


# --------------------------------------------------------------------------- one computation: the checks'


def page_section(page: str, title: str) -> str:
    return page.split(title)[1].split("<h3>")[0]


def page_figures(page: str) -> tuple[list, list]:
    """(realized rows [horizon, day interval, test interval, known outcomes], drift rows [input, PSI, limit]) of
    the page's details."""
    realized = re.findall(r"<tr><td>(\d+) min</td><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td></tr>", page)
    drift = page_section(page, "<h3>Input drift (population stability index)</h3>")
    return realized, re.findall(r"<tr><td>([^<]+)</td><td>([\d.]+)</td><td>([\d.]+|inf)</td>", drift)


def check_figures(evaluations: dict) -> tuple[list, list]:
    """The same rows from the checks' metadata, as the page writes them."""
    from engagement_pipeline.monitoring.report_text import interval_text

    realized = evaluations["realized_quality"].metadata
    test = dict(re.findall(r"\| (\d+) min \| [^|]+ \| ([\d.]+ \[[\d.]+, [\d.]+\]) \|", realized["quality"].value))
    rows = []
    for w in (10, 20, 30):
        estimate, low, high = (realized[f"realized_roc_auc_{w}m{end}"].value for end in ("", "_ci_low", "_ci_high"))
        rows.append((str(w), interval_text(estimate, low, high), test[str(w)]))
    psi = re.findall(
        r"^\| (\w+) \| ([\d.]+) \| ([\d.]+|inf) \|", evaluations["feature_drift"].metadata["psi"].value, re.M
    )
    return rows, psi


def test_the_report_shows_exactly_what_the_checks_computed_and_never_computes_it_again(home):
    result = materialize(DAILY, DAY)
    evaluations = {c.check_name: c for c in result.get_asset_check_evaluations()}
    realized, drift = evaluations["realized_quality"].metadata, evaluations["feature_drift"].metadata
    page = report_path(home / "reports", DAY).read_text()

    def assert_the_checks_figures(metadata, page):
        for w in (10, 20, 30):
            assert metadata[f"realized_roc_auc_{w}m"].value == realized[f"realized_roc_auc_{w}m"].value
        assert metadata["realized_quality"].value == realized["quality"].value  # intervals, test intervals, counts
        assert metadata["realized_day"].value == realized["labelled_day"].value
        assert metadata["max_psi"].value == drift["max_psi"].value
        assert metadata["drifted_inputs"].value == len(drift["drifted_inputs"].value)
        page_realized, page_drift = page_figures(page)
        rows, psi = check_figures(evaluations)
        assert [(w, day) for w, day, _, _ in page_realized] == [(w, day) for w, day, _ in rows]
        assert [(name, float(p), float(limit)) for name, p, limit in page_drift] == [
            (name, float(p), float(limit)) for name, p, limit in psi
        ]
        assert len(page_drift) == len(psi) > 20  # every input

    assert_the_checks_figures(result.asset_materializations_for_node("engagement_report")[0].metadata, page)
    with project_resources()["warehouse"].connect() as con:  # what the check stored, to the last digit
        stored = con.execute(
            "select horizon_minutes, roc_auc, roc_auc_low, roc_auc_high from realized_quality where day = ?", [DAY]
        ).fetchall()
        assert stored == [
            (w, *(realized[f"realized_roc_auc_{w}m{end}"].value for end in ("", "_ci_low", "_ci_high")))
            for w in (10, 20, 30)
        ]
        max_psi = con.execute("select max(psi) filter (judged) from feature_drift where day = ?", [DAY]).fetchone()
        assert max_psi == (drift["max_psi"].value,)

        # The day's data changes after the checks ran (outcomes reversed, an input moved): the report, written
        # again on its own, still shows what the checks reported; one that computed anything would not.
        start = dt.datetime.fromisoformat(realized["labelled_day"].value).replace(tzinfo=dt.UTC)
        span = [start, start + dt.timedelta(days=1)]
        con.execute(
            "update labels set continues = not continues where classification_id in "
            "(select classification_id from features where created_at >= ? and created_at < ?)",
            span,
        )
        con.execute(
            "update features set log_task_seconds = log_task_seconds + 3 where created_at >= ? and created_at < ?", span
        )
    again = materialize([engagement_report], DAY)
    assert_the_checks_figures(
        again.asset_materializations_for_node("engagement_report")[0].metadata,
        report_path(home / "reports", DAY).read_text(),
    )


def test_a_report_without_the_days_checks_says_they_have_not_run_and_what_to_do(home):
    result = materialize([user_predictions, engagement_report], DAY)  # the checks deselected
    page = report_path(home / "reports", DAY).read_text()
    lead = page.split('<section id="summary" class="lead">')[1].split("</section>")[0]
    sentences = re.findall(r"<li[^>]*>([^<]+)</li>", lead)
    todo = (
        f"has not run on the predictions of {DAY} by engagement-lstm v1: execute it (Dagster UI: "
        "`user_predictions`, Checks), then materialize this report again."
    )
    assert sentences[2] == f"How well the model did is not known yet: the `realized_quality` check {todo}"
    assert sentences[3] == (
        f"Whether the inputs of {DAY} look like the training data is not known: the `feature_drift` check {todo}"
    )
    metadata = result.asset_materializations_for_node("engagement_report")[0].metadata
    assert metadata["realized_day"].value == "none yet" and np.isnan(metadata["max_psi"].value)

    # the checks' figures belong to the version that scored the day: another version's are not shown
    materialize(DAILY, DAY)
    with project_resources()["warehouse"].connect() as con:
        con.execute("update realized_quality set model_version = 99")
        con.execute("update feature_drift set model_version = 99")
    materialize([engagement_report], DAY)
    page = report_path(home / "reports", DAY).read_text()
    assert f"the `realized_quality` check {todo}" in page and f"the `feature_drift` check {todo}" in page


def test_the_nightly_job_and_engagement_score_run_the_checks_before_the_report_and_say_realized_quality_once(
    home, capsys
):
    from engagement_pipeline.cli import main
    from engagement_pipeline.definitions import build_definitions

    job = build_definitions(project_resources()).resolve_job_def("nightly_score_and_report")
    with dg.DagsterInstance.ephemeral() as instance:
        run = job.execute_in_process(partition_key=DAY, instance=instance)
    steps = [e.step_key for e in run.all_events if e.event_type_value == "STEP_START"]
    assert steps.index("engagement_report") > max(
        steps.index("user_predictions_feature_drift"), steps.index("user_predictions_realized_quality")
    ), steps

    capsys.readouterr()
    main(["score", "--date", DAY])
    out = capsys.readouterr().out
    assert out.count("ROC-AUC 10m") == 1, out  # the day's realized quality, said once: by its check
    assert out.index("user_predictions_realized_quality:") < out.index("engagement_report:"), out
    assert out.index("user_predictions_feature_drift:") < out.index("engagement_report:"), out
