"""Policy loading: the default, overrides, and one-line errors for bad files."""

from __future__ import annotations

import pickle

import pytest
import yaml

import schemas
from tests.support.rows import person
from tests.support.scan import classify
from transforms.scan.policy import NOT_ACCEPTED, PolicyError, load_policy
from transforms.core.reasons import CATALOGUE


def write(tmp_path, data) -> str:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return str(path)


def default_data() -> dict:
    with open(schemas.policy_path(), encoding="utf-8") as f:
        return yaml.safe_load(f)


def test_default_policy_loads_and_pickles(policy):
    assert policy.version == "decree25-2013.1"
    assert len(policy.digest) == 64
    assert pickle.loads(pickle.dumps(policy)).version == policy.version
    assert policy.label_lookup["身份证"] == "RESIDENT_ID"
    assert policy.doc_line_limit == 5
    # Documents marked not accepted: their labels are DOC_TYPE_NOT_ACCEPTED, they have no number check.
    assert "HK_IDENTITY_CARD" in policy.not_accepted_documents and "HK_IDENTITY_CARD" not in policy.documents
    assert policy.label_lookup["香港身份证"] == policy.label_lookup["驾驶证"] == NOT_ACCEPTED
    # Every code table names its source and date, and travels with the policy.
    tables = pickle.loads(pickle.dumps(policy)).code_tables
    assert tables == policy.code_tables and len(tables.digest) == 64
    assert [name for name, _ in tables.sources] == [
        "uscc_authorities",
        "province_level_codes",
        "divisions",
        "countries",
    ]
    assert all(";" in source for _, source in tables.sources)


def test_override_changes_behaviour(tmp_path):
    data = default_data()
    data["policy_version"] = "operator-2027.1"
    data["names"]["person_min_chars"] = 3
    strict = load_policy(write(tmp_path, data))
    rows, _ = classify([person(name="张三")], strict)
    assert rows["L1"]["reasons"] == ["NAME_TOO_SHORT"]
    assert rows["L1"]["policy_version"] == "operator-2027.1"


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda d: d.pop("documents"), "'documents' is a required property"),
        (lambda d: d["names"].update(person_min_chars="two"), "names.person_min_chars"),
        (lambda d: d["documents"]["RESIDENT_ID"].update(check="astrology"), "documents.RESIDENT_ID.check"),
        (lambda d: d["labels"].update(NO_SUCH_DOC=["x"]), "labels.NO_SUCH_DOC"),
        (lambda d: d.update(surprise=1), "surprise"),
        (lambda d: d["enums"]["status"]["aliases"].update({"停": "PAUSED"}), "enums.status.aliases"),
        (lambda d: d["labels"]["RESIDENT_ID"].append("护照"), "maps to both"),
    ],
)
def test_bad_policy_is_one_line_error(tmp_path, mutate, fragment):
    data = default_data()
    mutate(data)
    with pytest.raises(PolicyError) as err:
        load_policy(write(tmp_path, data))
    message = str(err.value)
    assert "\n" not in message and fragment in message and message.startswith("policy ")


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(PolicyError, match="cannot be read"):
        load_policy(str(tmp_path / "absent.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("documents: [unclosed", encoding="utf-8")
    with pytest.raises(PolicyError, match="not valid YAML"):
        load_policy(str(bad))


def test_every_catalogue_code_is_in_docs_policy():
    import pathlib

    page = (pathlib.Path(__file__).parent.parent / "docs" / "policy.md").read_text(encoding="utf-8")
    missing = [code for code in CATALOGUE if f"`{code}`" not in page]
    assert not missing, f"docs/policy.md lacks reason codes: {missing}"
