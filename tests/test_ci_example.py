"""The CI examples of docs/ci.md (pasted into the README), run command for command on the sample model.

The test reads the YAML blocks from the document itself, so the documented jobs cannot
drift from what works. It plays the jobs' shell lines in-process (CliRunner, not a
subprocess per command: each would pay torch's import) with a small interpreter that
knows exactly the shell forms the document uses, and fails on any other line so that a
changed document updates this test too. The sample's env points at sample_models/
(a 64-input slice of its batch, to keep this fast); the baseline is made with the
document's own command.
"""

from __future__ import annotations

import functools
import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from relu_doctor.cli import app

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "ci.md"
SAMPLES = ROOT / "sample_models"
GATE = 0.75  # the documented --fail-dead-ratio


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


@dataclass
class Step:
    run: str
    condition: str | None = None


@dataclass
class Job:
    env: dict[str, str]
    steps: list[Step] = field(default_factory=list)


def _mapping(lines: list[str], start: int) -> dict[str, str]:
    """The `KEY: value` lines indented under lines[start]."""
    indent = len(lines[start]) - len(lines[start].lstrip())
    out = {}
    for line in lines[start + 1:]:
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        key, _, value = line.strip().partition(": ")
        out[key] = value.strip().strip('"')
    return out


def github_job(yaml: str) -> Job:
    """The single job of the GitHub workflow: job env, and each step's `run` and `if`."""
    lines = yaml.splitlines()
    env_at = next(i for i, line in enumerate(lines) if line.strip() == "env:")
    job = Job(_mapping(lines, env_at))
    condition = None
    for line in lines:
        stripped = line.strip().removeprefix("- ")
        if line.strip().startswith("- "):
            condition = None
        if stripped.startswith("if: "):
            condition = stripped.removeprefix("if: ")
        elif stripped.startswith("run: "):
            job.steps.append(Step(stripped.removeprefix("run: "), condition))
    return job


def gitlab_job(yaml: str) -> Job:
    lines = yaml.splitlines()
    env = _mapping(lines, next(i for i, line in enumerate(lines) if line.strip() == "variables:"))
    start = next(i for i, line in enumerate(lines) if line.strip() == "script:")
    script = []
    for line in lines[start + 1:]:
        if not line.strip().startswith("- "):
            break
        script.append(line.strip().removeprefix("- "))
    return Job(env, [Step("\n".join(script))])


@functools.cache
def _pip_resolves(requirement: str) -> int:
    """pip's own resolution and build of `requirement` (a path of this checkout), offline and installing nothing."""
    return subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--no-index",
                           "--no-build-isolation", "--quiet", requirement], cwd=ROOT, capture_output=True,
                          timeout=120).returncode


def pip_install(args: tuple[str, ...], cwd: Path) -> int:
    """The document's `pip install` line, run by pip as written except that nothing is downloaded or installed
    (the package under test is installed already): the requirement must be one pip can build from the job's
    checkout. The user's repository holds relu-doctor at tools/relu-doctor (a submodule): here, this checkout."""
    requirement, *options = args
    assert options in ([], ["--extra-index-url", "https://download.pytorch.org/whl/cpu"]), args
    assert requirement.startswith("./"), f"not an install from the checkout: {requirement}"
    (cwd / "tools").mkdir(exist_ok=True)
    if not (cwd / "tools" / "relu-doctor").exists():
        (cwd / "tools" / "relu-doctor").symlink_to(ROOT, target_is_directory=True)
    return _pip_resolves(str((cwd / requirement).resolve()))


class Shell:
    """Plays the document's shell lines: relu-doctor, pip install, cat >>, `|| var=$?`, exit."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.env, self.cwd, self.vars = env, cwd, {}  # type: ignore[var-annotated]
        self.calls: list[tuple[list[str], int]] = []

    def expand(self, word: str) -> str:
        return re.sub(r"\$\{?(\w+)\}?", lambda m: self.vars.get(m[1], self.env.get(m[1], "")), word)

    def line(self, text: str) -> int:
        command, _, on_error = text.partition(" || ")
        words = [self.expand(w) for w in shlex.split(command)]
        if words[0] == "relu-doctor":
            code = CliRunner().invoke(app, words[1:], env={"COLUMNS": "80", "NO_COLOR": "1"}).exit_code
            self.calls.append((words[1:], code))
        elif words[:2] == ["pip", "install"]:
            code = pip_install(tuple(words[2:]), self.cwd)
        elif words[0] == "cat" and words[2] == ">>":
            with open(self.cwd / words[3], "a") as out:
                out.write((self.cwd / words[1]).read_text())
            code = 0
        elif words[0] == "exit":
            status = re.fullmatch(r"exit \$\{(\w+):-(\d+)\}", command)
            assert status, f"unsupported exit form: {text}"
            return int(self.vars.get(status[1], status[2]))
        else:
            raise AssertionError(f"docs/ci.md has a line this test cannot play: {text}")
        if code and on_error:
            var = re.fullmatch(r"(\w+)=\$\?", on_error)
            assert var, f"unsupported || form: {text}"
            self.vars[var[1]] = str(code)
            return 0
        return code

    def script(self, text: str) -> int:
        for line in text.splitlines():
            code = self.line(line)
            if code:
                return code
        return 0


def github_condition(condition: str | None, failed: bool, cwd: Path) -> bool:
    """`if:` of a step; only the forms the document uses."""
    if condition is None:
        return not failed
    files = re.findall(r"hashFiles\('([^']+)'\) != ''", condition)
    assert condition == "${{ !cancelled() && " + " && ".join(f"hashFiles('{f}') != ''" for f in files) + " }}", \
        f"unsupported if: {condition}"
    return all((cwd / f).exists() for f in files)


def play_github(job: Job, cwd: Path) -> tuple[int, Shell]:
    shell, failed = Shell(job.env, cwd), 0
    for step in job.steps:
        if github_condition(step.condition, bool(failed), cwd):
            failed = shell.script(step.run) or failed
    return failed, shell


@pytest.fixture()
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A user's repository: the sample model as the checkpoint, a sample batch, a baseline made as documented."""
    if not (SAMPLES / "sample_cnn.pt").exists():
        pytest.skip("sample_models/ is not built")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "ci").mkdir()
    (tmp_path / "checkpoints" / "model.pt").write_bytes((SAMPLES / "sample_cnn.pt").read_bytes())
    # Every 8th input: 64 across the whole batch (its first 64 are too few to judge fc1_relu).
    np.save(tmp_path / "ci" / "sample_batch.npy", np.load(SAMPLES / "sample_batch.npy")[::8])
    text = DOC.read_text()
    baseline_cmds = [line for line in blocks(text, "bash")[0].splitlines() if line.startswith("relu-doctor ")]
    assert len(baseline_cmds) == 1
    assert Shell({}, tmp_path).line(baseline_cmds[0]) == 0
    assert (tmp_path / "ci" / "relu-doctor-baseline.json").exists()
    return {"GITHUB_STEP_SUMMARY": "step-summary.md"}


def baseline_site(cwd: Path, name: str) -> dict:
    sites = json.loads((cwd / "ci" / "relu-doctor-baseline.json").read_text())["sites"]
    return next(s for s in sites if s["name"] == name)


def live(site: dict) -> list[int]:
    return sorted(set(range(site["neurons"])) - set(site["dead_indices"]))


def kill_channels(path: Path, channels: list[int]) -> None:
    """Make the checkpoint worse: block2's BN outputs -1 on `channels` (dead after its ReLU)."""
    model = torch.jit.load(str(path))
    with torch.no_grad():
        model.block2.bn.weight[channels] = 0.0
        model.block2.bn.bias[channels] = -1.0
    model.save(str(path))


def github_yaml() -> str:
    return next(b for b in blocks(DOC.read_text(), "yaml") if "runs-on:" in b)


def gitlab_yaml() -> str:
    return next(b for b in blocks(DOC.read_text(), "yaml") if "script:" in b)


def test_docs_install_relu_doctor_with_the_cpu_torch_index() -> None:
    text = DOC.read_text()
    assert text.count(f"--fail-dead-ratio {GATE:g}") == 2  # the gate the tests below rely on
    assert "torch==" not in text and text.count("pip install ./tools/relu-doctor") == 2
    assert "submodules: true" in github_yaml() and "GIT_SUBMODULE_STRATEGY: recursive" in gitlab_yaml()
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in github_yaml()
    assert "PIP_EXTRA_INDEX_URL: https://download.pytorch.org/whl/cpu" in gitlab_yaml()


def test_github_job_passes_on_the_accepted_model(workspace: dict[str, str], tmp_path: Path) -> None:
    sites = json.loads((tmp_path / "ci" / "relu-doctor-baseline.json").read_text())["sites"]
    worst = max(s["dead_ratio"] for s in sites if s["grad_blocked"])
    assert worst <= GATE, f"the sample model's worst site ({worst:.0%}) is above the documented gate: update docs/ci.md"
    job = github_job(github_yaml())
    job.env.update(workspace)
    code, shell = play_github(job, tmp_path)
    commands = [args[0] for args, _ in shell.calls]
    assert code == 0 and commands == ["scan", "diff"], shell.calls
    assert any("--fail-increase" in args for args, _ in shell.calls)
    summary = (tmp_path / "step-summary.md").read_text()
    assert summary.startswith("### relu-doctor diff:") and "✅ passed" in summary
    assert "<details><summary>New report</summary>" in summary


def test_github_job_fails_on_a_regression_and_still_writes_the_summary(workspace: dict[str, str],
                                                                      tmp_path: Path) -> None:
    site = baseline_site(tmp_path, "block2.relu")
    kill_channels(tmp_path / "checkpoints" / "model.pt", live(site)[:3])  # +3/32 = +9.4 pp
    job = github_job(github_yaml())
    job.env.update(workspace)
    code, shell = play_github(job, tmp_path)
    assert code == 1 and [c for _, c in shell.calls] == [0, 1]  # the scan's own gate still passes
    summary = (tmp_path / "step-summary.md").read_text()
    before, after = site["dead"], site["dead"] + 3
    assert "❌ failed" in summary and f"| `block2.relu` | relu | {before}→{after} |" in summary
    assert (f"- ❌ site block2.relu: dead ratio {before / 32:.1%} -> {after / 32:.1%} (+9.4 pp > 2 pp, "
            "fail-increase)") in summary


def test_gitlab_job_runs_the_diff_after_a_failed_gate_and_fails(workspace: dict[str, str], tmp_path: Path) -> None:
    job = gitlab_job(gitlab_yaml())
    assert Shell(job.env, tmp_path).script(job.steps[0].run) == 0
    kill_channels(tmp_path / "checkpoints" / "model.pt", live(baseline_site(tmp_path, "block2.relu")))  # 100% dead
    shell = Shell(job.env, tmp_path)
    assert shell.script(job.steps[0].run) == 1
    assert [(args[0], code) for args, code in shell.calls] == [("scan", 1), ("diff", 1)]
    assert "### relu-doctor diff:" in (tmp_path / "relu-doctor.md").read_text()
