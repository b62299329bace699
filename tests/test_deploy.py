"""A deployable Dataflow job: the worker image, the Flex Templates, the launch options.

* The Dockerfile's worker image is Beam's SDK image of the Beam and Python this project is pinned to and
  tested with, and installs the project under constraints.txt: the pins are parsed from both files (and
  from setup.py, and from this environment).
* Each template's metadata (deploy/templates/NAME/metadata.json) is what ``dev.flex_templates`` makes
  from the launcher's parser today, every parameter is a real flag of the launcher, no flag is dropped
  unnoticed, and the regexes take good values and refuse bad ones. ``deploy/flex_main.py`` turns the
  parameters into a command line the launcher's own flag rule accepts.
* A Dataflow job with every launch option is built offline (tests/support/dataflow.py: a child process,
  no network) and carries the labels, the KMS key, the subnetwork, the service account, private IPs and
  the worker image; a missing or wrong option is one line.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import re
import sys

import pytest

from deploy.flex_main import NOT_PARAMETERS, TEMPLATES, launcher_argv, launcher_parser
from dev import flex_templates
from tests.support.dataflow import BUCKET, DATAFLOW, KMS_KEY, ROOT, dry_run

IMAGE = "europe-west1-docker.pkg.dev/demo-project/backfill/worker:0.1.0"
SUBNET = "regions/europe-west1/subnetworks/backfill"
WORKER_SA = "backfill-worker@demo-project.iam.gserviceaccount.com"


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(lines) -> dict[str, str]:
    """``name[extras]==version`` requirements -> {canonical name: version}."""
    found = {}
    for line in lines:
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;#]+)", line)
        if match:
            found[_canon(match.group(1))] = match.group(3)
    return found


def _read(name: str) -> str:
    with open(os.path.join(ROOT, name), encoding="utf-8") as f:
        return f.read()


def _instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions (continuation lines joined, comments dropped): (KEYWORD, arguments)."""
    text = re.sub(
        r"\\\n", " ", "\n".join(line for line in _read("Dockerfile").splitlines() if not line.startswith("#"))
    )
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines() if line.strip()]


def _install_requires() -> list[str]:
    for node in ast.walk(ast.parse(_read("setup.py"))):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "INSTALL_REQUIRES":
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py has no INSTALL_REQUIRES")


def test_the_worker_image_is_beams_sdk_image_of_the_pinned_beam_and_python():
    import apache_beam
    from apache_beam.transforms.environments import sdk_base_version_capability

    constraints = _pins(_read("constraints.txt").splitlines())
    froms = [args.split() for keyword, args in _instructions() if keyword == "FROM"]
    worker = next(f for f in froms if f[-1] == "worker")[0]
    match = re.fullmatch(r"apache/beam_python(\d+)\.(\d+)_sdk:(.+)", worker)
    assert match, worker
    assert match.group(3) == constraints["apache-beam"] == apache_beam.__version__
    assert (int(match.group(1)), int(match.group(2))) == sys.version_info[:2]  # the interpreter the pins were made on
    assert sdk_base_version_capability() == f"beam:version:sdk_base:{worker}"  # the image Beam itself names
    launcher = re.search(r"TEMPLATE_LAUNCHER_IMAGE=(\S+)", _read("Dockerfile")).group(1)
    assert f"/python{sys.version_info[0]}{sys.version_info[1]}-template-launcher-base" in launcher


def test_the_worker_image_installs_the_project_at_the_pins_of_constraints_txt():
    from importlib.metadata import version

    constraints = _pins(_read("constraints.txt").splitlines())
    steps = _instructions()
    installs = [args for keyword, args in steps if keyword == "RUN" and "pip install" in args]
    assert installs, "the Dockerfile installs nothing"
    for args in installs:
        assert re.search(r"pip install [^&]*-c constraints\.txt [^&]*\.(\s|$)", args), args
    copied = [args.split() for keyword, args in steps if keyword == "COPY" and not args.startswith("--from")]
    assert any("constraints.txt" in c[:-1] for c in copied)
    pinned_here = _pins(re.findall(r"[A-Za-z0-9._\[\]-]+==[^\s\"']+", _read("Dockerfile")))
    assert all(constraints.get(name) == pin for name, pin in pinned_here.items()), pinned_here
    required = _pins(_install_requires())
    assert len(required) == len(_install_requires())  # every requirement is pinned
    assert {name: constraints.get(name) for name in required} == required  # setup.py and constraints.txt agree
    assert {name: version(name) for name in required} == required  # and this environment runs those pins


def test_the_build_context_is_only_what_the_image_copies():
    patterns = [line.strip() for line in _read(".dockerignore").splitlines() if line.strip() and line[0] != "#"]
    assert patterns[0] == "*"  # everything out (keysets, bases, outputs, environments) unless named
    kept = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    sources = set()
    for keyword, args in _instructions():
        if keyword == "COPY" and not args.startswith("--from"):
            sources |= {s.rstrip("/") for s in args.split()[:-1]}
    assert sources == kept
    assert all(os.path.exists(os.path.join(ROOT, s)) for s in sources), sources
    packages = re.search(r"packages=\[(.*?)\]", _read("setup.py"), re.S).group(1)
    for package in re.findall(r'"([a-z_.]+)"', packages):
        assert package.split(".")[0] in sources, package


def test_every_template_is_its_launchers_flags_as_generated():
    assert sorted(os.listdir(os.path.join(ROOT, "deploy", "templates"))) == sorted(TEMPLATES)
    for name, template in TEMPLATES.items():
        with open(flex_templates.path(name), encoding="utf-8") as f:
            text = f.read()
        assert text == flex_templates.rendered(name), f"{name}: run python -m dev.flex_templates"
        meta = json.loads(text)
        assert meta["name"] == f"backfill-{name}" and meta["description"]
        assert meta["streaming"] is (name == "merge-streaming")
        flags = {s: a for a in launcher_parser(template)._actions for s in a.option_strings}
        names = [p["name"] for p in meta["parameters"]]
        assert len(names) == len(set(names))
        for param in meta["parameters"]:
            assert set(param) == {"name", "label", "helpText", "isOptional", "regexes"}, param
            action = flags[f"--{param['name']}"]  # a real flag of the launcher, spelled as it is
            assert param["isOptional"] is not action.required and param["helpText"] and param["label"]
            assert all(r.startswith("^") and r.endswith("$") and re.compile(r) for r in param["regexes"])
        kept = {flags[f"--{n}"] for n in names}  # an old spelling kept as an alias is its action's, not left out
        left_out = {s for s, a in flags.items() if a not in kept}
        assert left_out <= set(NOT_PARAMETERS) | set(template.excluded), (name, left_out)


REGEX_CASES = [
    ("scan", "as-of", ["2026-12-01"], ["2026-13-01", "yesterday", "2026-12-01; rm"]),
    ("scan", "base", ["gs://b-1/base/", "gs://b-1/a.parquet,gs://b-2/more/"], ["/data/base", "s3://b/x", "gs://b/a b"]),
    ("scan", "estimated-rows", ["300000000"], ["-1", "3e8", ""]),
    ("merge", "encoding", ["utf-8", "gb18030"], ["latin-1", "UTF-8 "]),
    ("merge", "keys", ["gs://secure-bucket/keyset.json"], ["/secure/keys.json"]),
    ("merge-streaming", "subscription", ["projects/demo-project/subscriptions/registrations"], ["registrations"]),
    ("notify", "dry-run", ["true", "false"], ["yes", "1"]),
    ("notify", "topic", ["projects/p-1/topics/backfill-notify-jobs"], ["projects/p/subscriptions/s"]),
    ("incident", "key-version", ["v3", "j12"], ["k1", "v"]),
    ("incident", "detected-at", ["2026-12-01", "2026-12-01T08:30:00"], ["2026-12-01T8"]),
    ("report", "earlier-merges", ["gs://bkt/merge/2026-11-30,gs://bkt/merge/2026-11-29"], ["gs://bkt/m,", "gs://b/m"]),
    ("retokenize", "kek", ["gcp-kms://projects/p/locations/europe-west1/keyRings/r/cryptoKeys/k"], ["aws-kms://x"]),
]


@pytest.mark.parametrize("name,param,good,bad", REGEX_CASES)
def test_the_regexes_take_good_values_and_refuse_bad_ones(name, param, good, bad):
    with open(flex_templates.path(name), encoding="utf-8") as f:
        (regexes,) = [p["regexes"] for p in json.load(f)["parameters"] if p["name"] == param]
    for value in good:
        assert all(re.search(r, value) for r in regexes), value
    for value in bad:
        assert not all(re.search(r, value) for r in regexes), value


def _parsed(name: str, params: list[str]):
    from pipelines.common import split_beam_flags

    template = TEMPLATES[name]
    parser = importlib.import_module(template.module).parser()
    return split_beam_flags(parser, launcher_argv(name, params))


def test_flex_main_gives_each_launcher_its_own_flags():
    beam = ["--runner=DataflowRunner", "--region=europe-west1", f"--dataflow_kms_key={KMS_KEY}"]
    paths = ["--base=gs://b/base/a,gs://b/base/b", "--out=gs://b/scan"]
    args, beam_args = _parsed("scan", [*paths, "--as_of=2026-12-01", "--estimated-rows=300", *beam])
    assert args.base == ["gs://b/base/a", "gs://b/base/b"] and str(args.as_of) == "2026-12-01"
    assert args.estimated_rows == 300 and beam_args == beam
    incident = ["--key-version=v1", "--base=gs://b/m/base", "--out=gs://b/incident", "--vault=gs://b/m/vault"]
    args, _ = _parsed("incident", [*incident, "--shred=true", "--keys=gs://k/keyset.json"])
    assert args.shred is True and args.key_version == "v1"
    assert _parsed("incident", [*incident, "--shred=false"])[0].shred is False
    with pytest.raises(ValueError, match="neither true nor false"):
        launcher_argv("incident", [*incident, "--shred=yes"])
    args, _ = _parsed("report", ["--out=gs://b/r", "--earlier-merges=gs://b/m/1,gs://b/m/2", "--merged=gs://b/m/3"])
    assert args.earlier_merges == ["gs://b/m/1", "gs://b/m/2"] and args.merge == "gs://b/m/3"
    args, _ = _parsed("report", ["--out=gs://b/r", "--merge=gs://b/m/3"])  # the old spelling still works
    assert args.merge == "gs://b/m/3"
    args, _ = _parsed("retention", ["--merged=gs://b/m", "--keys=gs://k/ks.json", "--out=gs://o", "--as-of=2026-12-01"])
    assert args.base == ["gs://b/m/base"] and args.vault == "gs://b/m/vault"
    assert launcher_argv("merge-streaming", ["--window-seconds=30"])[:2] == ["--streaming", "--window-seconds=30"]
    args, _ = _parsed(
        "retokenize", ["--keys=gs://k/ks.json", "--base=gs://b/m/base", "--vault=gs://b/v", "--out=gs://o"]
    )
    assert args.action == "retokenize" and args.vault == "gs://b/v"


def test_a_parameter_the_launcher_does_not_have_is_its_one_line_error(capsys):
    with pytest.raises(SystemExit) as done:
        _parsed("scan", ["--base=gs://b/base", "--out=gs://b/scan", "--as-off=2026-12-01"])
    assert done.value.code == 2
    assert capsys.readouterr().err.strip() == "backfill scan: error: unknown flag --as-off; did you mean --as-of?"


SCAN = ["--base", f"{BUCKET}/base/", "--out", f"{BUCKET}/scan", "--as-of", "2026-12-01", "--estimated-rows", "300"]


def _dataflow(*drop: str) -> list[str]:
    """The dry-run Dataflow flags without ``drop`` (a flag and its value)."""
    out = list(DATAFLOW)
    for flag in drop:
        at = out.index(flag)
        del out[at : at + 2]
    return out


@pytest.mark.parametrize(
    "change,message",
    [
        (_dataflow("--dataflow_kms_key"), "DataflowRunner needs --dataflow_kms_key projects/P/locations/REGION/"),
        (_dataflow("--region"), "DataflowRunner needs --region (e.g. --region europe-west1)"),
        (
            [*_dataflow("--dataflow_kms_key"), "--dataflow_kms_key", KMS_KEY.replace("europe-west1", "us-east1")],
            "a key in the job's region",
        ),
        ([*DATAFLOW, "--no_dataflow_kms_key"], "--dataflow_kms_key and --no_dataflow_kms_key contradict"),
        ([*DATAFLOW, "--labels", "Campaign=c1"], "a label key starts with a lowercase letter"),
        ([*DATAFLOW, "--labels", "day=2026/12/01"], "a label value has at most 63 of a-z 0-9 _ -"),
        ([*DATAFLOW, "--labels", "step=scan"], "the step label is set by the launcher"),
        ([*DATAFLOW, "--subnetwork", "regions/us-east1/subnetworks/s"], "--subnetwork is in us-east1"),
        (
            [*DATAFLOW, "--template_location", f"{BUCKET}/t/scan"],
            "--template_location: backfill scan waits for its job",
        ),
        ([*DATAFLOW, "--no_wait_until_finish"], "--no_wait_until_finish: backfill scan waits for its job"),
    ],
)
def test_a_wrong_dataflow_launch_is_one_line(change, message, capsys):
    from pipelines import scan

    assert scan.main([*SCAN, *change]) == 1
    err = capsys.readouterr().err
    assert err.startswith("backfill scan: error: ") and message in err and err.count("\n") == 1, err


def test_the_opt_out_is_a_real_flag_and_a_typo_of_it_is_refused(capsys):
    from pipelines.common import beam_options, split_beam_flags
    from pipelines.scan import parser

    _, beam_args = split_beam_flags(parser(), [*SCAN, *_dataflow("--dataflow_kms_key"), "--no-dataflow-kms-key"])
    assert "--no_dataflow_kms_key" in beam_args
    beam_options(beam_args, step="scan", run_id="scan-1")  # accepted: no key, on record in the log
    with pytest.raises(SystemExit) as done:
        split_beam_flags(parser(), [*SCAN, *_dataflow("--dataflow_kms_key"), "--no_dataflow_kms_keys"])
    assert done.value.code == 2 and "did you mean --no_dataflow_kms_key?" in capsys.readouterr().err
    beam_options(_dataflow("--dataflow_kms_key"), step="report")  # the report reads no identity: no key needed


def _labels(job: dict) -> dict:
    return json.loads(job["job"])["labels"]


IMAGED = [*_dataflow("--setup_file"), "--sdk_container_image", IMAGE]  # the image holds the project: no sdist


@pytest.mark.e2e  # the job is built in a child process, with no network
def test_a_dataflow_job_with_every_launch_option_builds_offline(site):
    options = ["--no_use_public_ips", "--subnetwork", SUBNET, "--service_account_email", WORKER_SA]
    options += ["--labels", "campaign=c2026-w1", "--labels", "day=2026-12-01"]
    job = dry_run(site["tmp"], "scan", [*SCAN, *options], dataflow=IMAGED)
    assert not any(a["staged_name"] == "workflow.tar.gz" for a in job["artifacts"])  # workers install nothing
    run_id = re.search(r"scan (scan-\S+): dry run on DataflowRunner", job["stdout"]).group(1)
    labels = {"campaign": "c2026-w1", "day": "2026-12-01", "step": "scan", "run_id": run_id.lower()}
    assert _labels(job) == labels
    env = job["environment"]
    assert env["service_kms_key_name"] == KMS_KEY and env["service_account_email"] == WORKER_SA
    (pool,) = env["worker_pools"]
    assert pool["subnetwork"] == SUBNET and pool["ip_configuration"] == "WORKER_IP_PRIVATE"
    images = pool["sdk_harness_container_images"]
    assert [i["container_image"] for i in images] == [IMAGE]
    worker = next(args.split()[0] for keyword, args in _instructions() if keyword == "FROM" and "worker" in args)
    assert f"beam:version:sdk_base:{worker}" in images[0]["capabilities"]  # the image is built on the SDK Beam expects


@pytest.mark.e2e
def test_a_flex_template_launch_builds_its_launchers_job(site, monkeypatch):
    monkeypatch.setenv("BACKFILL_TEMPLATE", "scan")
    params = ["--base=gs://demo-bucket/base/", "--out=gs://demo-bucket/scan", "--as-of=2026-12-01"]
    job = dry_run(
        site["tmp"], "deploy.flex_main", [*params, "--estimated-rows=300", "--labels=campaign=c1"], None, IMAGED
    )
    assert "dry run on DataflowRunner" in job["stdout"] and job["gcs_client_used"] is False
    assert _labels(job)["step"] == "scan" and _labels(job)["campaign"] == "c1"
    assert job["environment"]["service_kms_key_name"] == KMS_KEY
    # the streaming merge only submits its job: a template launch (--template_location) is its way to run
    monkeypatch.setenv("BACKFILL_TEMPLATE", "merge-streaming")
    stream = ["--subscription=projects/demo-project/subscriptions/registrations", f"--keys={site['keys']}"]
    stream += ["--base=gs://demo-bucket/base/base.parquet", "--out=gs://demo-bucket/stream", "--as-of=2026-12-01"]
    job = dry_run(
        site["tmp"], "deploy.flex_main", [*stream, "--template_location=gs://demo-bucket/t/job"], site["disk"], IMAGED
    )
    assert job["options"]["streaming"] is True and job["options"]["template_location"] == "gs://demo-bucket/t/job"
    assert _labels(job)["step"] == "merge-streaming"
