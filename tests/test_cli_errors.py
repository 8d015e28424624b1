"""`rightsizer validate/render/run` on files a person gets wrong: one line naming the file and the problem, a
non-zero exit, never a traceback."""

from __future__ import annotations

import os

import pytest
import yaml

from conftest import SAMPLES
from rightsizer import cli

JOB = {"apiVersion": "rightsizer.io/v1alpha1", "kind": "RightsizeJob"}


def bad_files(tmp_path) -> dict[str, tuple[str, str]]:
    """name -> (path, what the one line must say)"""
    def write(name: str, text: str) -> str:
        (tmp_path / name).write_text(text)
        return str(tmp_path / name)

    return {
        "malformed YAML": (write("broken.yaml", "kind: RightsizeJob\nspec: [unclosed\n"), "not valid YAML (line 3"),
        "a missing file": (str(tmp_path / "absent.yaml"), "cannot read it: No such file or directory"),
        "a directory": (str(tmp_path), "cannot read it: Is a directory"),
        "spec: 5": (write("spec5.yaml", yaml.safe_dump({**JOB, "metadata": {"name": "five"}, "spec": 5})),
                    "five: spec must be a mapping, not a number"),
        "metadata: 5": (write("meta5.yaml", yaml.safe_dump({**JOB, "metadata": 5, "spec": {}})),
                        "document 1: metadata must be a mapping, not a number"),
        "an empty file": (write("empty.yaml", ""), "no RightsizeJob in it"),
        "no RightsizeJob": (write("other.yaml", "kind: Namespace\nmetadata: {name: x}\n---\n5\n"),
                            "no RightsizeJob in it"),
    }


@pytest.mark.parametrize("command", ["validate", "render", "run"])
def test_every_bad_file_is_one_line_and_a_failure(tmp_path, capsys, command):
    for what, (path, expected) in bad_files(tmp_path).items():
        code = cli.main([command, path])
        captured = capsys.readouterr()
        output = (captured.out + captured.err).strip()
        assert code == 1, (what, output)
        assert len(output.splitlines()) == 1 and expected in output and path in output, (what, output)
        assert "Traceback" not in output


def test_validate_checks_the_other_files_after_a_bad_one(tmp_path, capsys):
    code = cli.main(["validate", str(tmp_path / "absent.yaml"), str(SAMPLES / "fraud-local.yaml")])
    out = capsys.readouterr().out
    assert code == 1 and "absent.yaml: cannot read it" in out and "fraud-local: ok" in out


def test_metadata_null_is_read_as_no_metadata(tmp_path, capsys):
    body = yaml.safe_load((SAMPLES / "fraud-advanced.yaml").read_text())
    body["metadata"] = None
    path = tmp_path / "no-metadata.yaml"
    path.write_text(yaml.safe_dump(body))
    assert cli.main(["validate", str(path)]) == 0
    assert "?: ok" in capsys.readouterr().out
    assert cli.main(["render", str(path)]) == 0
    assert '"JobName": "unnamed-' in capsys.readouterr().out


def test_run_says_which_of_several_local_jobs_it_takes(tmp_path, capsys, monkeypatch):
    from rightsizer.tools import run as local_run

    sample = yaml.safe_load((SAMPLES / "fraud-local.yaml").read_text())
    second = {**sample, "metadata": {"name": "fraud-local-2"}}
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump_all([sample, second]))
    picked = local_run._pick(str(path), None)
    assert picked["metadata"]["name"] == sample["metadata"]["name"]
    err = capsys.readouterr().err
    assert f"running {sample['metadata']['name']}, the first of 2 with backend: local" in err
    assert "--name picks another" in err
    assert local_run._pick(str(path), "fraud-local-2")["metadata"]["name"] == "fraud-local-2"
    assert capsys.readouterr().err == ""  # one match: nothing to say


def test_run_disables_the_instance_metadata_probe(tmp_path, monkeypatch):
    from rightsizer.tools import run as local_run

    monkeypatch.delenv("AWS_EC2_METADATA_DISABLED", raising=False)
    seen = {}
    monkeypatch.setattr(local_run, "run_file", lambda *a, **k: seen.setdefault(
        "value", os.environ.get("AWS_EC2_METADATA_DISABLED")) and 0)
    cli.main(["run", str(SAMPLES / "fraud-local.yaml")])
    assert seen["value"] == "true"
