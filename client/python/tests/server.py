"""Test support: a bundle trained from synthetic data, a twotower_server child process
on free loopback ports, and both with a RetrievalClient for a test module. Paths come from
TWOTOWER_BINARY_DIR / TWOTOWER_SOURCE_DIR (set by the CTest entry python_client)."""

from __future__ import annotations

import csv
import os
import selectors
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from twotower.client import RetrievalClient

BINARY_DIR = Path(os.environ.get("TWOTOWER_BINARY_DIR", "build"))
SOURCE_DIR = Path(os.environ.get("TWOTOWER_SOURCE_DIR", Path(__file__).resolve().parents[3]))


@dataclass
class TrainedBundle:
    path: str                   # the bundle directory (bundles/latest)
    brands: dict[str, str]      # item id -> brand, from the synthetic items.csv
    users: list[str]            # ids of users in the training data (known to the model)

    @property
    def items(self) -> list[str]:
        return list(self.brands)


_bundle: TrainedBundle | None = None
_work = None


def _run(args: list[str]) -> None:
    result = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({result.returncode}):\n{result.stdout}")


def trained_bundle() -> TrainedBundle:
    """Synthetic data and a 1-epoch model with a history feature, once per process."""
    global _bundle, _work
    if _bundle is None:
        _work = tempfile.TemporaryDirectory(prefix="twotower-pytest-")
        data, bundles = f"{_work.name}/data", f"{_work.name}/bundles"
        _run([str(BINARY_DIR / "twotower_synth"), f"--out_dir={data}", "--users=300", "--items=200"])
        _run([str(BINARY_DIR / "twotower_train"), f"--config={SOURCE_DIR}/configs/synthetic.textproto",
              f"--data_dir={data}", f"--export_dir={bundles}", "--epochs=1",
              '--override=data { users { features { name: "history" kind: KIND_HISTORY embedding_dim: 8 '
              'history_length: 5 } } }'])
        with open(f"{data}/items.csv", newline="") as f:
            brands = {row["item_id"]: row["brand"] for row in csv.DictReader(f)}
        with open(f"{data}/train.csv", newline="") as f:
            users = list(dict.fromkeys(row["user_id"] for row in csv.DictReader(f)))
        _bundle = TrainedBundle(f"{bundles}/latest", brands, users)
    return _bundle


class ServerProcess:
    """twotower_server on 127.0.0.1:0 (both APIs); start() waits for its ready line."""

    def __init__(self, bundle: str, extra_flags: tuple[str, ...] = ()) -> None:
        self._args = [str(BINARY_DIR / "twotower_server"), f"--bundle={bundle}",
                      "--address=127.0.0.1:0", "--admin_address=127.0.0.1:0", *extra_flags]
        self._process: subprocess.Popen | None = None
        self.version = self.address = self.admin_address = ""

    def start(self, timeout_s: float = 60.0) -> "ServerProcess":
        self._process = subprocess.Popen(self._args, stdout=subprocess.PIPE)
        assert self._process.stdout is not None
        os.set_blocking(self._process.stdout.fileno(), False)
        line = b""
        deadline = time.monotonic() + timeout_s
        with selectors.DefaultSelector() as selector:
            selector.register(self._process.stdout, selectors.EVENT_READ)
            while b"\n" not in line:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.stop()
                    raise RuntimeError(f"no ready line from the server within {timeout_s} s")
                if selector.select(left):
                    chunk = self._process.stdout.read()
                    if not chunk:
                        self.stop()
                        raise RuntimeError(f"server exited before it was ready: {line!r}")
                    line += chunk
        # "serving model <version> on <host:port> (admin <host:port>)"
        words = line.split(b"\n")[0].decode().split(" ")
        if len(words) != 7 or words[0] != "serving" or words[3] != "on":
            self.stop()
            raise RuntimeError(f"unexpected ready line: {line!r}")
        self.version, self.address, self.admin_address = words[2], words[4], words[6].rstrip(")")
        return self

    def send_signal(self, sig: int) -> None:
        assert self._process is not None
        self._process.send_signal(sig)

    def stop(self) -> int | None:
        """SIGTERM, then the exit code (killed after 10 s: None)."""
        if self._process is None:
            return None
        process, self._process = self._process, None
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            return None
        finally:
            if process.stdout is not None:
                process.stdout.close()


def serve_trained_bundle() -> tuple[TrainedBundle, ServerProcess, RetrievalClient]:
    """trained_bundle(), a started ServerProcess on it and a RetrievalClient of its Retrieval
    API (a test module's set-up; stop_served undoes it)."""
    bundle = trained_bundle()
    server = ServerProcess(bundle.path).start()
    return bundle, server, RetrievalClient(server.address)


def stop_served(server: ServerProcess, client: RetrievalClient) -> None:
    """Closes the client, then stops the server (what serve_trained_bundle started)."""
    client.close()
    server.stop()


def free_port() -> int:
    """A loopback port nothing listens on now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
