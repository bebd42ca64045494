"""The model registry: which version scores, what it expects, how a new version is logged and promoted.

MLflow holds the registered model `engagement-lstm`; the alias `champion`
names the version that scoring (batch and online) uses. Every version carries
compatibility tags (horizons, window K, feature names) so a consumer can tell
whether it fits today's `features` table before loading it, and the decision
training took about it (`promotion_decision`).

    find_champion / load_model / load_champion   the version behind the alias, loaded through pyfunc
    compatibility_tags / champion_version        what a version expects, written and read back
    log_lstm / register                          the trained LSTM as an MLflow model, then a version
    promote                                      the gate of CONTRACT.md "Model registry"

The gate: a new version becomes champion only when the volunteer-level
bootstrap 95% interval of its mean test ROC-AUC lies above 0.5 AND it scores
at least as well as the current champion on the same test rows. Otherwise it
is registered without the alias, and the decision says why, with the numbers.

It fails closed: when the current champion cannot be looked up (the store is
unreachable or busy) or evaluated (its model does not load or predict), when
it lacks its compatibility tags, or when its score on these rows is not a
number, nothing is promoted and the decision says why. To replace such a
champion on purpose, remove its alias (`mlflow` client:
delete_registered_model_alias("engagement-lstm", "champion")) and train
again: the next version is then judged as the first. A champion trained on
other features, or sharing no horizon, is the exception: it can no longer
score today's table, so a new version above chance replaces it (the
decision says so).

The alias and its decision move together: the decision (words, and
`promoted` = true/false) is written on the new version before the alias
moves, and `find_champion` accepts only a version whose recorded decision is
`promoted` = true. A process killed at any point leaves the old champion or
the new one, each with its decision.

mlflow and torch are imported inside functions: definitions.py imports this module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from engagement_pipeline.model.evaluation import Resamples, mean_auc, mean_auc_with_interval
from engagement_pipeline.model.windows import FeatureMatrix, gather_windows
from engagement_pipeline.resources import CHAMPION_ALIAS, Tracking

DECISION_TAG = "promotion_decision"
PROMOTED_TAG = "promoted"  # "true" / "false": the gate's verdict, recorded before the alias moves
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"  # MLflow opens the experiment on runs and models, not GenAI traces


@dataclass(frozen=True)
class ChampionVersion:
    """The registered version that scores, and what it expects (from its tags)."""

    name: str
    version: int
    horizons: list[int]
    window: int
    feature_names: list[str]

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


@dataclass(frozen=True)
class Champion(ChampionVersion):
    """A champion version with its model loaded through mlflow.pyfunc."""

    model: object = None  # mlflow.pyfunc.PyFuncModel

    def predict(self, windows: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(windows), dtype=np.float64).reshape(len(windows), len(self.horizons))


class NoChampionError(RuntimeError):
    pass


def find_champion(tracking: Tracking) -> ChampionVersion:
    """The version the `champion` alias points at; an error saying why when there is none."""
    from mlflow.exceptions import MlflowException

    name = tracking.registered_model_name
    if not tracking.store_exists():  # nothing trained yet: say so without creating an empty store to look in
        raise NoChampionError(no_champion_message(None, name, tracking.uri()))
    client = tracking.client()
    try:
        version = client.get_model_version_by_alias(name, CHAMPION_ALIAS)
    except MlflowException:
        raise NoChampionError(no_champion_message(client, name, tracking.uri())) from None
    if version.tags.get(PROMOTED_TAG) != "true":
        raise NoChampionError(
            f"The `{CHAMPION_ALIAS}` alias of `{name}` in {tracking.uri()} points at v{version.version}, whose "
            "promotion decision is not recorded (the alias was set by hand, or a training process stopped between "
            "the two steps): nothing scores with it. Materialize `engagement_model` again, or, to accept it as "
            f"it is, tag v{version.version} `{PROMOTED_TAG}` = `true`."
        )
    return champion_version(name, version)


def no_champion_message(client, name: str, uri: str) -> str:
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name = '{name}'") if client is not None else []
    except MlflowException:
        versions = []
    if not versions:
        return (
            f"No `{CHAMPION_ALIAS}` version of the registered model `{name}` in {uri}: "
            "materialize the `engagement_model` asset first (it trains, registers and promotes a model)."
        )
    last = max(versions, key=lambda v: int(v.version))
    decision = last.tags.get(DECISION_TAG, "no decision recorded")
    return (
        f"No `{CHAMPION_ALIAS}` version of the registered model `{name}` in {uri}: {len(versions)} version(s) "
        f"registered, none passed the promotion gate. The last, v{last.version}: {decision}. "
        "Train on more data (or data with more volunteers) and materialize `engagement_model` again."
    )


def compatibility_tags(horizons: list[int], window: int, feature_names: list[str], run_id: str) -> dict[str, str]:
    """The tags a consumer reads to know what a version takes and returns (see `champion_version`)."""
    return {
        "horizons": json.dumps(horizons),
        "window": str(window),
        "feature_names": json.dumps(feature_names),
        "output": "P(continue) per horizon, columns in `horizons` order",
        "run_id": run_id,
    }


def champion_version(name: str, version) -> ChampionVersion:
    """What a registered version expects, from the tags training wrote on it; KeyError/ValueError if they are missing."""
    return ChampionVersion(
        name=name,
        version=int(version.version),
        horizons=[int(h) for h in json.loads(version.tags["horizons"])],
        window=int(version.tags["window"]),
        feature_names=list(json.loads(version.tags["feature_names"])),
    )


def registered_version(tracking: Tracking, name: str, number: int | str) -> ChampionVersion:
    """What version `number` of `name` expects (its compatibility tags), whether or not it is the champion now."""
    return champion_version(name, tracking.client().get_model_version(name, str(number)))


def load_model(version: ChampionVersion) -> Champion:
    """Load the version through mlflow.pyfunc, pinned by number (the alias may move meanwhile)."""
    import mlflow.pyfunc

    return Champion(**vars(version), model=mlflow.pyfunc.load_model(version.uri))


def load_champion(tracking: Tracking) -> Champion:
    return load_model(find_champion(tracking))


def mark_experiment(client, experiment_id: str) -> None:
    """Tag the experiment as model training (also one created before the tag existed)."""
    experiment = client.get_experiment(experiment_id)
    if experiment.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)


# --------------------------------------------------------------------------- logging a new version


def log_lstm(model, example: np.ndarray, n_horizons: int):
    """Log the LSTM to the active run as an MLflow model, exported with torch.export ("pt2").

    pt2 on purpose: loading it runs no pickle of our classes, so any process
    with torch + mlflow can serve it without this package. The signature fixes
    K and F (both are fixed per model); the batch dimension stays dynamic, which
    needs an input example with at least 2 rows.
    """
    import warnings

    import mlflow
    import torch
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    if len(example) < 2:  # torch.export would specialize a size-1 batch dimension to a constant
        example = np.concatenate([example, example])
    _, window, n_features = example.shape
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, window, n_features))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, n_horizons))]),
    )
    with warnings.catch_warnings():
        # torch.export notes that nn.LSTM re-assigns its flat weights while tracing: harmless here
        warnings.filterwarnings("ignore", message="The tensor attributes self.lstm._flat_weights")
        return mlflow.pytorch.log_model(
            model,
            name="model",
            signature=signature,
            input_example=example,
            serialization_format="pt2",
            # pinned explicitly: inferring requirements would load the model again in a subprocess
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}", "numpy"],
        )


def register(model_uri: str, name: str, tags: dict[str, str]) -> str:
    import mlflow

    return str(mlflow.register_model(model_uri, name, tags=tags).version)


# --------------------------------------------------------------------------- promotion


@dataclass(frozen=True)
class Promotion:
    promoted: bool
    reason: str
    version: str
    new_score: float
    champion_version: str | None = None
    champion_score: float | None = None
    new_ci_low: float = float("nan")
    new_ci_high: float = float("nan")
    n_rows: int = 0
    n_volunteers: int = 0
    failed_closed: bool = False  # the champion could not be looked up or judged: nothing was compared

    @property
    def above_chance(self) -> bool:
        return bool(np.isfinite(self.new_ci_low) and self.new_ci_low > 0.5)


def champion_predictions(
    client, model_name: str, matrix: FeatureMatrix, rows: np.ndarray, horizons: list[int]
) -> tuple[str | None, np.ndarray | None, list[int], str]:
    """Run the current champion on `rows` of this run's data.

    Returns (champion version or None, P [len(rows), len(common horizons)] or
    None when it cannot be evaluated, the horizon columns of the new model it
    covers, a note). A champion with a different window is fed windows of its
    own length. One trained on other features than today's `features` table
    cannot be evaluated here, and cannot score either (scoring needs the same
    features): it is no longer a usable champion.
    """
    aliases = client.get_registered_model(model_name).aliases  # raises when the store cannot be read
    if CHAMPION_ALIAS not in aliases:
        return None, None, [], "no champion yet"
    number = str(aliases[CHAMPION_ALIAS])
    version = client.get_model_version(model_name, number)
    try:
        expects = champion_version(model_name, version)
    except (KeyError, ValueError) as error:
        raise ChampionUnusable(f"champion v{number} lacks its compatibility tags ({error!r})") from None
    window, champion_horizons = expects.window, expects.horizons
    common = [h for h in champion_horizons if h in horizons]
    if expects.feature_names != matrix.feature_names or not common:
        why = "no horizon in common"
        if expects.feature_names != matrix.feature_names:
            why = "it was trained on other features than the current table"
        return number, None, [], f"champion v{number} cannot be evaluated (or used for scoring) here: {why}"
    champion = load_model(expects)  # pinned by version: the alias may move meanwhile
    p = np.concatenate(
        [champion.predict(gather_windows(matrix, rows[i : i + 4096], window)) for i in range(0, len(rows), 4096)]
    )
    p = p[:, [champion_horizons.index(h) for h in common]]
    if not np.isfinite(p).all():
        raise ChampionUnusable(f"champion v{number} predicts NaN for {int((~np.isfinite(p)).any(axis=1).sum()):,} rows")
    return number, p, [horizons.index(h) for h in common], f"champion v{number} evaluated"


class ChampionUnusable(RuntimeError):
    """The current champion cannot be judged against: the gate promotes nothing."""


def promotion_rule(new_score: float, champion_score: float | None) -> bool:
    """The comparison half of the gate: no comparable champion, or the new model scores at least as well.

    A champion whose score is NaN is not comparable, and not replaced: `promote` refuses before this.
    """
    return champion_score is None or (bool(np.isfinite(champion_score)) and new_score >= champion_score)


def promote(
    client,
    model_name: str,
    version: str,
    matrix: FeatureMatrix,
    rows: np.ndarray,
    y_test: np.ndarray,
    p_new: np.ndarray,
    horizons: list[int],
    n_resamples: int = 200,
    seed: int = 0,
) -> Promotion:
    """Apply the gate to the new version on these test rows; move the alias only when it passes.

    The mean test ROC-AUC (over the horizons the champion shares, else all)
    and its interval come from volunteer-level bootstrap resamples of `rows`.
    """
    resamples = Resamples.draw(matrix.user_start[rows], n_resamples, seed)
    try:
        champion, p_champion, columns, note = champion_predictions(client, model_name, matrix, rows, horizons)
        champion_score = mean_auc(y_test[:, columns], p_champion) if p_champion is not None else None
        if champion_score is not None and not np.isfinite(champion_score):
            raise ChampionUnusable(f"champion v{champion} scores NaN on these test rows")
    except Exception as error:  # noqa: BLE001 - whatever went wrong, the gate must not open
        return refuse(client, model_name, version, error)
    columns = columns if p_champion is not None else list(range(len(horizons)))
    new_score, (low, high) = mean_auc_with_interval(y_test[:, columns], p_new[:, columns], resamples)
    n_rows = int((~np.isnan(y_test[:, columns])).any(axis=1).sum())
    gate = Promotion(False, "", version, new_score, champion, champion_score, low, high, n_rows, resamples.n_volunteers)
    promoted = gate.above_chance and promotion_rule(new_score, champion_score)
    reason = decision_words(gate, promoted, note)
    # the decision first: a process killed before the alias moves leaves the old champion in place
    client.set_model_version_tag(model_name, version, DECISION_TAG, reason)
    client.set_model_version_tag(model_name, version, PROMOTED_TAG, str(promoted).lower())
    if promoted:
        client.set_registered_model_alias(model_name, CHAMPION_ALIAS, version)
    return Promotion(**{**vars(gate), "promoted": promoted, "reason": reason})


def refuse(client, model_name: str, version: str, error: Exception) -> Promotion:
    """Fail closed: nothing promoted; the decision (on the version, when the store takes it) says why."""
    what = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, ChampionUnusable):
        why = f"{what}; it is not replaced without comparison"
        how = f"to replace it anyway, delete the `{CHAMPION_ALIAS}` alias and materialize `engagement_model` again"
    else:
        why = f"the current champion could not be looked up or evaluated ({type(error).__name__}: {what[:300]})"
        how = "materialize `engagement_model` again once the MLflow store answers"
    reason = f"new v{version} not promoted: {why}; the alias did not move ({how})"
    try:
        client.set_model_version_tag(model_name, version, DECISION_TAG, reason)
        client.set_model_version_tag(model_name, version, PROMOTED_TAG, "false")
    except Exception:  # noqa: BLE001, S110 - the store is the problem: the run, the asset and the log still say it
        pass
    return Promotion(False, reason, version, float("nan"), failed_closed=True)


def decision_words(gate: Promotion, promoted: bool, note: str) -> str:
    """E.g. "new v3 0.7895 [0.7801, 0.7990] vs champion v2 0.7890 on the same 12,345 test rows: promoted"."""
    new = f"new v{gate.version} mean test ROC-AUC {gate.new_score:.4f} [{gate.new_ci_low:.4f}, {gate.new_ci_high:.4f}]"
    rows = f"{gate.n_rows:,} test rows of {gate.n_volunteers:,} volunteers"
    champion = f"champion v{gate.champion_version}" if gate.champion_version else "no champion yet"
    if not gate.above_chance:
        keeps = f"champion v{gate.champion_version} stays" if gate.champion_version else "no champion yet"
        return (
            f"{new} on {rows}: not distinguishable from chance (the 95% interval does not lie above 0.5): "
            f"not promoted, {keeps}"
        )
    if gate.champion_version is None:
        return f"{new} on {rows}, above chance; {champion}: promoted"
    if gate.champion_score is None:  # trained on other features or horizons: it can no longer score
        return f"{new}, above chance; {note}: promoted, since an unusable champion would stop the nightly scoring"
    verdict = "promoted" if promoted else f"not promoted, champion v{gate.champion_version} stays"
    return f"{new} vs {champion} {gate.champion_score:.4f} on the same {rows}: {verdict}"
