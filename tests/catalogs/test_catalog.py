"""Catalog validation: the shipped examples, `tailor catalog validate` as a real process, and policy wiring."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from policies import VWPolicy, shared_line
from server import Catalog, CatalogError, load_catalog_dir

from ..conftest import LAYOUTS, write_catalog

SHIPPED_CATALOGS = Path(__file__).resolve().parents[2] / "catalogs"


def validate(directory: Path) -> subprocess.CompletedProcess[str]:
    """`tailor catalog validate DIR` in a fresh interpreter, as an operator would run it."""
    return subprocess.run(
        [sys.executable, "-m", "server", "catalog", "validate", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def problem_line(stderr: str, file: Path, field: str) -> str:
    """The one stderr line about `field` in `file`; fails the test when there is none."""
    lines = [line for line in stderr.splitlines() if str(file) in line and f": {field}:" in line]
    assert lines, f"no problem reported for {file.name} field {field!r}; stderr was:\n{stderr}"
    return lines[0]


def test_shipped_catalogs_load_and_compile() -> None:
    files = sorted(SHIPPED_CATALOGS.glob("*.yaml"))
    catalogs = load_catalog_dir(SHIPPED_CATALOGS)

    assert files, "the repository ships example catalogs"
    assert sorted(c.source for c in catalogs.values()) == files
    for catalog in catalogs.values():
        assert len(catalog.action_lines) == len(catalog.action_ids) == len(catalog.spec.actions)
        assert all(line.startswith("|a id=") for line in catalog.action_lines)
        assert "--cb_explore_adf" in catalog.policy.learning_spec().vw_args()


def test_shipped_catalog_actions_are_scored_by_their_own_policy() -> None:
    for catalog in load_catalog_dir(SHIPPED_CATALOGS).values():
        if not catalog.action_lines:
            continue
        policy = VWPolicy(catalog.policy.learning_spec())
        pmf = policy.predict(shared_line("device=mobile"), catalog.action_lines)
        policy.close()
        assert len(pmf) == len(catalog.action_ids)
        assert sum(pmf) == pytest.approx(1.0)


def test_validate_lists_every_decision_point_of_a_good_directory(tmp_path: Path) -> None:
    folder = tmp_path / "catalogs"
    folder.mkdir()
    write_catalog(folder, "home_layout", LAYOUTS)
    write_catalog(folder, "cart_offer", {"none": {"kind": "none"}, "pct10": {"kind": "percent", "discount": 0.1}})
    (folder / "pdp_recommendations.yaml").write_text("decision_point: pdp_recommendations\nactions: []\n")

    result = validate(folder)

    assert result.returncode == 0, result.stderr
    for name in ("home_layout", "cart_offer", "pdp_recommendations"):
        assert name in result.stdout


def test_validate_passes_the_shipped_catalogs() -> None:
    result = validate(SHIPPED_CATALOGS)

    assert result.returncode == 0, result.stderr
    for path in SHIPPED_CATALOGS.glob("*.yaml"):
        assert path.stem in result.stdout


BAD_CATALOGS = [
    pytest.param("decision_point: Bad Name\n", "decision_point", "lowercase letters", id="bad-decision-point-name"),
    pytest.param("decision_point: home\npolcy: {}\n", "polcy", "unknown key", id="unknown-key"),
    pytest.param(
        "decision_point: home\nactions:\n  - {id: grid}\n  - {id: grid}\n",
        "actions",
        "'grid' appears twice",
        id="duplicate-action-ids",
    ),
    pytest.param(
        "decision_point: home\npolicy: {reward_range: [1, 1]}\n", "policy", "reward_range", id="reward-range-empty"
    ),
    pytest.param(
        "decision_point: home\npolicy: {reward_range: [1, 0], default_reward: 0.5}\n",
        "policy",
        "reward_range",
        id="reward-range-reversed",
    ),
    pytest.param(
        "decision_point: home\npolicy: {reward_range: [0, 1], default_reward: 2}\n",
        "policy",
        "default_reward",
        id="default-reward-outside-range",
    ),
    pytest.param(
        "decision_point: home\npolicy: {reward_window_seconds: 0}\n",
        "policy.reward_window_seconds",
        "greater than 0",
        id="zero-window",
    ),
    pytest.param(
        "decision_point: home\npolicy: {reward_window_seconds: -5}\n",
        "policy.reward_window_seconds",
        "greater than 0",
        id="negative-window",
    ),
    pytest.param(
        "decision_point: home\nactions:\n  - {id: ten, payload: {code: 10}}\n",
        "actions.0.payload.code",
        "string",
        id="non-string-payload",
    ),
    pytest.param(
        "decision_point: home\nactions:\n  - {id: new, features: {fresh: true}}\n",
        "actions.0.features",
        "true/false",
        id="boolean-feature",
    ),
    pytest.param(
        "decision_point: home\nactions:\n  - {id: deals, features: {deals: yes}}\n",
        "actions.0.features",
        "true/false",
        id="yaml-yes-is-a-boolean-feature",
    ),
    pytest.param(
        "decision_point: home\npolicy: {exploration: {algorithm: thompson}}\n",
        "policy.exploration",
        "'thompson'",
        id="unknown-exploration-algorithm",
    ),
    pytest.param(
        "decision_point: home\npolicy: {learning: {interactions: [cx]}}\n",
        "policy.learning.interactions",
        "namespace letters from c, s, a",
        id="interaction-unknown-namespace",
    ),
    pytest.param(
        "decision_point: home\npolicy: {learning: {interactions: [ccsa]}}\n",
        "policy.learning.interactions",
        "2 (quadratic) or 3 (cubic)",
        id="interaction-too-long",
    ),
    pytest.param(
        "decision_point: home\npolicy: {learning: {interactions: [ca, ca]}}\n",
        "policy.learning.interactions",
        "repeat",
        id="interaction-repeated",
    ),
    pytest.param(
        "decision_point: home\npolicy: {learning: {ignore_linear: [x]}}\n",
        "policy.learning.ignore_linear",
        "namespace letters from c, s, a",
        id="ignore-linear-unknown-namespace",
    ),
    pytest.param("decision_point: home\nactions: [\n", "(file)", "not valid YAML", id="invalid-yaml"),
]


@pytest.mark.parametrize(("text", "field", "what"), BAD_CATALOGS)
def test_validate_names_file_field_and_problem(tmp_path: Path, text: str, field: str, what: str) -> None:
    folder = tmp_path / "catalogs"
    folder.mkdir()
    write_catalog(folder, "good_one", LAYOUTS)
    bad = folder / "bad.yaml"
    bad.write_text(text)

    result = validate(folder)

    assert result.returncode != 0
    assert what in problem_line(result.stderr, bad, field)
    assert "Traceback" not in result.stderr


def test_validate_rejects_a_decision_point_defined_twice(tmp_path: Path) -> None:
    folder = tmp_path / "catalogs"
    folder.mkdir()
    write_catalog(folder, "home_layout", LAYOUTS)
    copy = folder / "home_layout_copy.yaml"
    copy.write_text((folder / "home_layout.yaml").read_text())

    result = validate(folder)

    assert result.returncode != 0
    line = problem_line(result.stderr, copy, "decision_point")
    assert "'home_layout'" in line
    assert "home_layout.yaml" in line.replace(str(copy), "")


def test_validate_rejects_an_empty_directory(tmp_path: Path) -> None:
    folder = tmp_path / "catalogs"
    folder.mkdir()
    (folder / "README.txt").write_text("catalogs go here")

    result = validate(folder)

    assert result.returncode != 0
    assert str(folder) in result.stderr
    assert "no catalog files" in result.stderr


def test_validate_rejects_a_missing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nope"

    result = validate(missing)

    assert result.returncode != 0
    assert str(missing) in result.stderr
    assert any(what in result.stderr for what in ("not a directory", "does not exist", "not found"))
    assert "Traceback" not in result.stderr


def test_validate_reports_every_problem_across_files_in_one_run(tmp_path: Path) -> None:
    folder = tmp_path / "catalogs"
    folder.mkdir()
    write_catalog(folder, "home_layout", LAYOUTS)
    bad_name = folder / "a.yaml"
    bad_name.write_text("decision_point: Bad Name\n")
    typo = folder / "b.yaml"
    typo.write_text("decision_point: cart_offer\npolcy: {}\n")
    no_window = folder / "c.yaml"
    no_window.write_text("decision_point: search\npolicy: {reward_window_seconds: 0}\n")

    result = validate(folder)

    assert result.returncode != 0
    problem_line(result.stderr, bad_name, "decision_point")
    problem_line(result.stderr, typo, "polcy")
    problem_line(result.stderr, no_window, "policy.reward_window_seconds")


def load_one(folder: Path, name: str) -> Catalog:
    return load_catalog_dir(folder)[name]


def test_empty_action_list_is_valid(tmp_path: Path) -> None:
    (tmp_path / "pdp.yaml").write_text("decision_point: pdp\nactions: []\n")

    catalog = load_one(tmp_path, "pdp")

    assert catalog.action_ids == ()
    assert catalog.action_lines == ()


def test_exploration_parameters_reach_the_vw_arguments(tmp_path: Path) -> None:
    write_catalog(tmp_path, "eps", LAYOUTS, exploration={"algorithm": "epsilon_greedy", "epsilon": 0.2})
    write_catalog(tmp_path, "soft", LAYOUTS, exploration={"algorithm": "softmax", "lambda": 3})
    write_catalog(tmp_path, "bits", LAYOUTS, learning={"bits": 20, "learning_rate": 0.5})

    assert "--epsilon 0.2" in load_one(tmp_path, "eps").policy.learning_spec().vw_args()
    assert "--lambda 3.0" in load_one(tmp_path, "soft").policy.learning_spec().vw_args()
    bits_args = load_one(tmp_path, "bits").policy.learning_spec().vw_args().split()
    assert bits_args[bits_args.index("-b") + 1] == "20"
    assert bits_args[bits_args.index("-l") + 1] == "0.5"


def test_interactions_and_ignore_linear_reach_the_vw_arguments(tmp_path: Path) -> None:
    cubic_keys = {"interactions": ["ca", "sa", "cca"], "ignore_linear": ["c", "s"]}
    write_catalog(tmp_path, "cubic", LAYOUTS, learning=cubic_keys)
    write_catalog(tmp_path, "plain", LAYOUTS, learning={"interactions": ["ca", "ss"], "ignore_linear": []})
    write_catalog(tmp_path, "defaults", LAYOUTS)

    cubic = load_one(tmp_path, "cubic").policy.learning_spec().vw_args()
    assert "-q ca -q sa --cubic cca --ignore_linear c --ignore_linear s" in cubic
    plain = load_one(tmp_path, "plain").policy.learning_spec().vw_args()
    assert "-q ca -q ss -b" in plain and "--ignore_linear" not in plain
    defaults = load_one(tmp_path, "defaults").policy.learning_spec().vw_args()
    assert "-q ca -q sa --ignore_linear c" in defaults and "--gamma_scale 30.0" in defaults
    # every spelling VW accepts, and the models it builds learn and predict
    policy = VWPolicy(load_one(tmp_path, "cubic").policy.learning_spec())
    shared = shared_line("device=mobile", "events:1.5")
    policy.learn(shared, ["|a id=x", "|a id=y"], 0, -1.0, 0.5)
    assert len(policy.predict(shared, ["|a id=x", "|a id=y"])) == 2
    policy.close()


def test_learning_flags_change_the_fingerprint_and_other_policy_fields_do_not(tmp_path: Path) -> None:
    write_catalog(tmp_path, "base", LAYOUTS)
    write_catalog(tmp_path, "window", LAYOUTS, reward_window_seconds=5, default_reward=0.5, aggregation="sum")
    write_catalog(tmp_path, "eps", LAYOUTS, exploration={"algorithm": "epsilon_greedy", "epsilon": 0.2})
    write_catalog(tmp_path, "eps_more", LAYOUTS, exploration={"algorithm": "epsilon_greedy", "epsilon": 0.3})
    write_catalog(tmp_path, "bits", LAYOUTS, learning={"bits": 20})
    catalogs = load_catalog_dir(tmp_path)
    fingerprint = {name: c.policy.learning_spec().fingerprint() for name, c in catalogs.items()}

    assert fingerprint["window"] == fingerprint["base"]
    assert len({fingerprint[n] for n in ("base", "eps", "eps_more", "bits")}) == 4


def test_the_baseline_action_defaults_to_the_first_and_must_be_a_catalog_action(tmp_path: Path) -> None:
    folder = tmp_path / "catalogs"
    folder.mkdir()
    write_catalog(folder, "home_layout", LAYOUTS)
    assert load_catalog_dir(folder)["home_layout"].baseline_action == next(iter(LAYOUTS))
    (folder / "chosen.yaml").write_text(
        "decision_point: offers\npolicy: {baseline_action: b}\nactions: [{id: a}, {id: b}]\n"
    )
    (folder / "supplied.yaml").write_text("decision_point: ranking\npolicy: {baseline_action: organic}\n")
    (folder / "none.yaml").write_text("decision_point: search\n")
    catalogs = load_catalog_dir(folder)
    assert catalogs["offers"].baseline_action == "b"
    assert catalogs["ranking"].baseline_action == "organic"  # request-supplied actions: any id
    assert catalogs["search"].baseline_action is None
    (folder / "bad.yaml").write_text("decision_point: bad\npolicy: {baseline_action: z}\nactions: [{id: a}]\n")
    with pytest.raises(CatalogError) as err:
        load_catalog_dir(folder)
    assert any("baseline_action 'z' is not an action of this catalog" in p for p in err.value.problems)
