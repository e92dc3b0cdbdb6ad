"""The services as real subprocesses (gateway, writer, the supervisor), configured for one
test through the environment, exactly as a user would start them."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path
from types import TracebackType

import httpx

from shared.settings import Settings

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The process environment that makes `Settings.from_env()` return `settings`, plus
    `extra` (e.g. test-only failpoints). Every variable is set, so nothing from the
    caller's environment leaks into the test's services."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINISOURCE_")}
    for f in fields(Settings):
        env[f.metadata["env"]] = str(getattr(settings, f.name))
    env.update(extra)
    return env


class Service:
    """One `python -m <module>` child; its output goes to a file shown on failure."""

    def __init__(self, module: str, env: dict[str, str], log_dir: Path, *, name: str = "") -> None:
        self.module = module
        self.name = name or module.rsplit(".", 1)[-1]
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{self.name}-{time.monotonic_ns()}.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", module],
                env=env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Own process group: a Ctrl-C of the test run does not reach it, and the
                # supervisor test can signal the whole group the way a terminal does.
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def running(self) -> bool:
        return self.process.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        if self.running():
            self.process.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL, then reap."""
        if self.running():
            self.process.kill()
        self.process.wait(timeout=10)

    def wait(self, timeout: float) -> int:
        """The exit code, waiting at most `timeout` seconds."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} still running after {timeout}s; output:\n{self.output()[-3000:]}"
            ) from None

    def close(self) -> None:
        """Make sure nothing of it is left: SIGKILL its whole process group."""
        if self.running():
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def __enter__(self) -> Service:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def wait_ready(gateway: Service, url: str, within: float = 30.0) -> None:
    """Until the gateway at `url` answers /ready with 200; fails with its output if it
    exits first or is not ready `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        assert gateway.running(), gateway.output()[-3000:]
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise AssertionError(f"gateway not ready: {gateway.output()[-3000:]}")
