"""Policy loading: the default, overrides, and one-line errors for bad files."""

from __future__ import annotations

import os
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
    assert policy.version == "decree25-2013.5"
    assert len(policy.digest) == 64
    assert pickle.loads(pickle.dumps(policy)).version == policy.version
    assert policy.label_lookup["身份证"] == "RESIDENT_ID"
    assert policy.doc_line_limit == 5
    # Documents marked not accepted: their labels are DOC_TYPE_NOT_ACCEPTED, they have no number check.
    assert "HK_IDENTITY_CARD" in policy.not_accepted_documents and "HK_IDENTITY_CARD" not in policy.documents
    assert policy.label_lookup["香港居民身份证"] == policy.label_lookup["驾驶证"] == NOT_ACCEPTED
    # Mislabelled and ambiguous labels are review labels (docs/policy.md "Document labels"), never also labels.
    assert policy.review_labels == {
        "回乡证": "HK_MACAO_TRAVEL_PERMIT",
        "香港身份证": "HK_MACAO_TRAVEL_PERMIT",
        "澳门身份证": "HK_MACAO_TRAVEL_PERMIT",
        "人民警察证": "ARMED_POLICE_ID",
    }
    assert not set(policy.review_labels) & set(policy.label_lookup)
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
        (lambda d: d["review_labels"].update({"驾驶证": "RESIDENT_ID"}), "review_labels.驾驶证"),
        (lambda d: d["labels"]["HK_IDENTITY_CARD"].append("香港身份证"), "also under labels"),
        # Art. 11 keeps identity two years after the service ends: a shorter period would purge what must be kept
        (lambda d: d["retention"].update(years_after_termination=1), "retention.years_after_termination"),
        (lambda d: d["retention"].update(years_after_termination=0), "less than the minimum of 2"),
    ],
)
def test_bad_policy_is_one_line_error(tmp_path, mutate, fragment):
    data = default_data()
    mutate(data)
    with pytest.raises(PolicyError) as err:
        load_policy(write(tmp_path, data))
    message = str(err.value)
    assert "\n" not in message and fragment in message and message.startswith("policy ")


def test_document_number_placeholders_are_one_list():
    """The default policy's document_numbers.placeholders and DocumentRules()'s defaults are the same list: the
    policy's earlier list and the values DocumentRules() once held besides (empty, to be filled in, other, nil,
    keyboard runs)."""
    from transforms.scan.document_rules import DocumentRules

    listed = default_data()["document_numbers"]["placeholders"]
    assert tuple(listed) == DocumentRules().number_placeholders
    assert len(set(listed)) == len(listed)
    earlier = ["无", "未知", "不详", "暂无", "测试", "NULL", "NONE", "TEST", "N/A", "NA", "UNKNOWN", "123456"]
    earlier += ["1234567", "12345678", "123456789", "0123456789"]
    once_in_rules = ["暂无", "空", "待补", "待补充", "其他", "NIL", "1234567890", "000000"]
    assert set(listed) == set(earlier) | set(once_in_rules)


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(PolicyError, match="cannot be read"):
        load_policy(str(tmp_path / "absent.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("documents: [unclosed", encoding="utf-8")
    with pytest.raises(PolicyError, match="not valid YAML"):
        load_policy(str(bad))


def test_a_key_given_twice_is_refused_with_its_line(tmp_path):
    # YAML keeps the last of two equal keys silently: a limit of 5 lines per document would become 50
    text = open(schemas.policy_path(), encoding="utf-8").read()
    lines = text.splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.strip() == "doc_line_limit: 5")
    lines.insert(at + 1, "  doc_line_limit: 50\n")
    twice = tmp_path / "twice.yaml"
    twice.write_text("".join(lines), encoding="utf-8")
    with pytest.raises(PolicyError) as caught:
        load_policy(str(twice))
    assert str(caught.value) == f"policy {twice}: line {at + 2}: 'doc_line_limit' is given twice"


def test_every_catalogue_code_is_in_docs_policy():
    import pathlib

    page = (pathlib.Path(__file__).parent.parent / "docs" / "policy.md").read_text(encoding="utf-8")
    missing = [code for code in CATALOGUE if f"`{code}`" not in page]
    assert not missing, f"docs/policy.md lacks reason codes: {missing}"


def test_an_alias_bomb_a_deep_nest_and_an_endless_file_are_refused_in_one_line(tmp_path):
    # a few lines of YAML aliases expand to 10**9 values: the schema check would take minutes and gigabytes
    bomb = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    bomb += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    (tmp_path / "bomb.yaml").write_text("\n".join(bomb) + "\n", encoding="utf-8")
    (tmp_path / "deep.yaml").write_text(
        "x: " + "[" * 990 + "]" * 990 + "\n", encoding="utf-8"
    )  # under libyaml's own limit
    for name, fragment in (("bomb.yaml", "values once its YAML aliases are expanded"), ("deep.yaml", "nested")):
        with pytest.raises(PolicyError) as err:
            load_policy(str(tmp_path / name))
        assert fragment in str(err.value) and "\n" not in str(err.value), name
    (tmp_path / "big.yaml").write_bytes(b"# " + b"x" * (64 << 20) + b"\n")
    with pytest.raises(PolicyError, match="bytes: not a policy file"):
        load_policy(str(tmp_path / "big.yaml"))
    os.mkfifo(tmp_path / "fifo.yaml")  # nothing writes into it: opened, it would block for ever
    for special, kind in ((tmp_path / "fifo.yaml", "a named pipe"), ("/dev/zero", "a device")):
        with pytest.raises(PolicyError, match=f"is {kind}, not a policy file"):
            load_policy(str(special))
