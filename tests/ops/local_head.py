"""A Ray head started with `ray start --head --block` in a subprocess, torn down by its PIDs.

Shared by the cluster and job tests. Other sessions may run their own Ray on the same
machine, so nothing here uses `ray stop` (which stops every Ray on the host) or a default
port: every port is a free one picked here, the session files go to a private temp dir,
and teardown signals exactly the processes this head started (its process tree, collected
before the signal, plus any process that names the private temp dir: the fake multi-node
provider's nodes outlive the monitor that started them).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def client_env() -> dict[str, str]:
    """Environment for the head and its clients (drivers, `ray job submit`).

    Ray 2.60 turns token authentication on for a new head when the mode is unset (and
    creates ~/.ray/auth_token), but a client with the mode unset does not send the token:
    name the mode for both. RAY_ADDRESS is dropped so nothing joins another cluster. This
    interpreter's bin folder goes first on PATH, as in an activated venv or the cluster image,
    so a job's `python ...` entrypoint is the Python that has the project's packages.
    """
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "token"
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


@dataclass
class Head:
    gcs_address: str  # host:port for ray.init(address=...)
    dashboard_url: str | None  # http://127.0.0.1:port for `ray job submit`, if started
    temp_dir: str
    process: subprocess.Popen
    log_path: str

    def log_tail(self, chars: int = 4000) -> str:
        return Path(self.log_path).read_text(errors="replace")[-chars:]


def node_ip() -> str:
    import ray._private.services

    return ray._private.services.get_node_ip_address()


def _start_command(
    temp_dir: str, dashboard: bool, extra: list[str], port: int | None
) -> tuple[list[str], dict]:
    ports = {
        "port": port or free_port(),
        "ray-client-server-port": free_port(),
        "dashboard-agent-listen-port": free_port(),
        "dashboard-agent-grpc-port": free_port(),
        "metrics-export-port": free_port(),
        "runtime-env-agent-port": free_port(),
    }
    command = [RAY, "start", "--head", "--block", f"--temp-dir={temp_dir}", "--disable-usage-stats"]
    command += [f"--{name}={value}" for name, value in ports.items()]
    if dashboard:
        ports["dashboard-port"] = free_port()
        command += ["--include-dashboard=true", "--dashboard-host=127.0.0.1"]
        command += [f"--dashboard-port={ports['dashboard-port']}"]
    else:
        command += ["--include-dashboard=false"]
    return command + extra, ports


@contextlib.contextmanager
def ray_head(
    *extra: str,
    dashboard: bool = False,
    env: dict[str, str] | None = None,
    port: int | None = None,
    timeout: float = 60,
) -> Iterator[Head]:
    """Start a head (extra `ray start` flags appended), yield it, and stop all it started.

    `port` is the GCS port (default: a free one), for configs that must name it up front.
    """
    temp_dir = tempfile.mkdtemp(prefix="rops-", dir="/tmp")  # short: socket paths
    command, ports = _start_command(temp_dir, dashboard, list(extra), port)
    log_path = os.path.join(temp_dir, "ray-start.log")
    child_env = {**client_env(), **(env or {}), "RAY_USAGE_STATS_ENABLED": "0"}
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=child_env)
    head = Head(
        gcs_address=f"{node_ip()}:{ports['port']}",
        dashboard_url=f"http://127.0.0.1:{ports['dashboard-port']}" if dashboard else None,
        temp_dir=temp_dir,
        process=process,
        log_path=log_path,
    )
    try:
        _wait_started(head, timeout)
        yield head
    finally:
        stop(head)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _wait_started(head: Head, timeout: float) -> None:
    """`ray start` writes ray_current_cluster once the head's processes are up."""
    marker = Path(head.temp_dir, "ray_current_cluster")
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if head.process.poll() is not None:
            raise RuntimeError(f"ray start exited {head.process.returncode}:\n{head.log_tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"ray head not up after {timeout} s:\n{head.log_tail()}")
        time.sleep(0.2)


def _ours(head: Head) -> list[psutil.Process]:
    """The head's process tree and every process that names its private temp dir."""
    found: dict[int, psutil.Process] = {}
    with contextlib.suppress(psutil.NoSuchProcess):
        root = psutil.Process(head.process.pid)
        for process in [root, *root.children(recursive=True)]:
            found[process.pid] = process
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if head.temp_dir in cmdline and process.pid != os.getpid():
            found.setdefault(process.pid, process)
            with contextlib.suppress(psutil.NoSuchProcess):
                for child in process.children(recursive=True):
                    found.setdefault(child.pid, child)
    return list(found.values())


def stop(head: Head, grace: float = 10) -> None:
    """SIGTERM every process the head started, then SIGKILL what is left after `grace`."""
    processes = _ours(head)
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(processes, timeout=grace)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(alive, timeout=5)
    with contextlib.suppress(subprocess.TimeoutExpired):
        head.process.wait(timeout=5)
