"""jobs/: every entrypoint documents its `ray job submit` line, and the caption job runs
to completion when submitted to a real local Ray cluster with `ray job submit`."""

from __future__ import annotations

import ast
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from factory.cli import samples_dir
from tests.ops.local_head import RAY, client_env, ray_head

ROOT = Path(__file__).resolve().parents[2]
JOBS = sorted(p for p in (ROOT / "jobs").glob("*.py") if p.name != "__init__.py")
# --working-dir uploads the repository: leave out what is not code (Ray honours .gitignore
# files but not .git/info/exclude)
EXCLUDES = [".git", ".venv", ".whl", ".ci", "**/__pycache__", "*.egg-info", "factory-demo-output"]


def submit_command(job: Path) -> list[str]:
    """The `ray job submit ...` command in the job's docstring, as argv."""
    doc = ast.get_docstring(ast.parse(job.read_text("utf-8"))) or ""
    joined = re.sub(r"\\\n\s*", " ", doc)  # shell line continuations
    lines = [line.strip() for line in joined.splitlines() if "ray job submit" in line]
    assert lines, f"{job.name}: no `ray job submit` command in the docstring"
    return shlex.split(lines[0])


def entrypoint(command: list[str]) -> list[str]:
    return command[command.index("--") + 1 :]


@pytest.mark.parametrize("job", JOBS, ids=[p.stem for p in JOBS])
def test_every_job_documents_its_submit_command(job):
    command = submit_command(job)
    assert command[:3] == ["ray", "job", "submit"]
    assert command[command.index("--working-dir") + 1] == "."
    argv = entrypoint(command)
    assert argv[:3] == ["python", "-m", f"jobs.{job.stem}"] or argv[:2] == [
        "python",
        f"jobs/{job.name}",
    ], argv
    if "--config" in argv:
        assert (ROOT / argv[argv.index("--config") + 1]).is_file(), argv


@pytest.mark.parametrize("job", JOBS, ids=[p.stem for p in JOBS])
@pytest.mark.parametrize("where", ["repository", "elsewhere"])
def test_every_job_entrypoint_starts(job, where, tmp_path):
    # the documented entrypoint, as Ray runs it (cwd = the uploaded repository), and from
    # any other folder (the installed package carries jobs/)
    argv = entrypoint(submit_command(job))
    command = [sys.executable, *argv[1 : argv.index(f"jobs.{job.stem}") + 1], "--help"]
    cwd = ROOT if where == "repository" else tmp_path
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout


def test_working_dir_package_is_code_only_and_small(tmp_path):
    # the zip `ray job submit --working-dir .` uploads, built by Ray's own packaging code
    from zipfile import ZipFile

    from ray._private.runtime_env import packaging

    package = tmp_path / "working_dir.zip"
    packaging.create_package(str(ROOT), package, include_gitignore=True, excludes=EXCLUDES)
    names = ZipFile(package).namelist()
    assert "jobs/caption.py" in names and "factory/cli.py" in names
    assert not [n for n in names if n.startswith((".venv/", ".git/", ".whl/"))]
    # Ray warns from half its gRPC message limit on and refuses the whole limit
    assert package.stat().st_size < packaging.PACKAGE_SIZE_WARNING


def _with_paths(argv: list[str], **values: str) -> list[str]:
    out = list(argv)
    for flag, value in values.items():
        out[out.index(f"--{flag}") + 1] = value
    return out


@pytest.mark.slow
def test_caption_job_submitted_to_a_local_cluster_completes(tmp_path):
    output = tmp_path / "run"
    argv = _with_paths(
        entrypoint(submit_command(ROOT / "jobs" / "caption.py")),
        input=str(samples_dir()),
        output=str(output),
    )
    # the random-weight demo captioner repeats itself: record health flags, reject nothing
    argv += ["--set", "health.reject_on=[]"]
    with ray_head("--num-cpus=2", "--num-gpus=0", dashboard=True, timeout=60) as head:
        command = [RAY, "job", "submit", "--address", head.dashboard_url, "--working-dir", "."]
        command += ["--runtime-env-json", json.dumps({"excludes": EXCLUDES}), "--", *argv]
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=240, env=client_env()
        )
        log = done.stdout[-4000:] + done.stderr[-2000:]
        assert done.returncode == 0, log + head.log_tail()
    assert "succeeded" in done.stdout, log
    run = json.loads((output / "run.json").read_text())
    counts = run["counts"]
    shards = {d: sorted((output / d).glob("part-*.parquet")) for d in ("captions", "rejected")}
    rows = {d: sum(pq.read_metadata(p).num_rows for p in paths) for d, paths in shards.items()}
    images = [p for p in Path(samples_dir()).iterdir() if p.suffix != ".tsv"]
    assert counts["inputs"] == len(images) == 6
    assert shards["captions"] and rows["captions"] == counts["accepted"] > 0
    assert rows["rejected"] == counts["rejected"]
    assert counts["accepted"] + counts["rejected"] + counts["duplicates"] == counts["inputs"]
    captions = pq.read_table(shards["captions"][0], columns=["caption_detailed"])
    assert all(captions.column("caption_detailed").to_pylist())
