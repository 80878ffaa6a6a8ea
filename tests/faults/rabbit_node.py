"""Run a private RabbitMQ node that a test may stop, start and restart.

The node never touches the machine's shared broker (rabbit@localhost on 5672): it gets its own
node name, ports, data and log directories, config files and Erlang cookie, all under
`base_dir`. Only the shared epmd (4369) is used, as every local Erlang node does.

Pitfalls handled here:
- `/usr/sbin/rabbitmq-server` switches to the rabbitmq user and drops the environment, so the
  node is launched with `/usr/lib/rabbitmq/bin/rabbitmq-server` directly.
- `/etc/rabbitmq/rabbitmq-env.conf` sets NODENAME=rabbit@localhost and `/etc/rabbitmq/
  rabbitmq.conf` listens on 127.0.0.1:5672; both are replaced by private files, or the node
  would clash with the shared one.
- Without a HOME of its own the node (running as root) would create /root/.erlang.cookie.
- Ports come from below the kernel's ephemeral range, so that client sockets opened while the
  node is down cannot take its port before a restart.
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import amqp

RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
RABBITMQCTL = Path("/usr/lib/rabbitmq/bin/rabbitmqctl")
_POLL_INTERVAL = 0.1
_PORT_RANGE = (20000, 32767)
# Ports other local RabbitMQ tools listen on: the shared node, its distribution port and the
# CLI tools' distribution range.
_RESERVED_PORTS = {4369, 5672, 25672, *range(35672, 35683)}
_CONFIG = """\
log.console = false
log.file.level = info
disk_free_limit.absolute = 10MB
"""


class RabbitNodeError(RuntimeError):
    """The private node failed to start or stop."""


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ephemeral_low() -> int:
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _free_ports(count: int) -> list[int]:
    """Pick distinct free loopback ports below the ephemeral range."""
    low, high = _PORT_RANGE[0], min(_PORT_RANGE[1], _ephemeral_low() - 1)
    rng = random.SystemRandom()
    ports: list[int] = []
    for _ in range(1000):
        port = rng.randint(low, high)
        if port not in ports and port not in _RESERVED_PORTS and _port_is_free(port):
            ports.append(port)
            if len(ports) == count:
                return ports
    raise RabbitNodeError(f"no {count} free ports in {low}-{high}")


def _amqp_ready(port: int) -> bool:
    """Return whether a guest AMQP connection to the node opens."""
    conn = amqp.Connection(host=f"127.0.0.1:{port}", userid="guest", password="guest", connect_timeout=1)
    try:
        conn.connect()
    except (OSError, amqp.exceptions.AMQPError):
        conn.collect()
        return False
    try:
        conn.close()
    except (OSError, amqp.exceptions.AMQPError):
        conn.collect()
    return True


def _wait_unreaped(pid: int, timeout: float) -> bool:
    """Wait until the child `pid` exits, leaving it unreaped; return whether it exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
        if os.waitid(os.P_PID, pid, flags) is not None:
            return True
        time.sleep(_POLL_INTERVAL)
    return False


class RabbitNode:
    """A private RabbitMQ node on free loopback ports, with its data under `base_dir`."""

    def __init__(self, base_dir: Path, name: str | None = None) -> None:
        self.base_dir = Path(base_dir)
        self.nodename = f"{name or 'tchutest-' + secrets.token_hex(4)}@localhost"
        self.amqp_port, self.dist_port = _free_ports(2)
        self._proc: subprocess.Popen[bytes] | None = None
        self._stdout_path = self.base_dir / "stdout.log"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}//"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "log" / f"{self.nodename}.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout: float = 60) -> None:
        """Launch the node and wait until a guest AMQP connection opens."""
        if self._proc is not None:
            raise RabbitNodeError(f"{self.nodename} is already running")
        env = self._prepare()
        with self._stdout_path.open("ab") as out:
            # A session of its own lets stop() kill the whole tree (sh, beam, erl_child_setup).
            self._proc = subprocess.Popen(
                [str(RABBITMQ_SERVER)],
                env=env,
                cwd=self.base_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not _amqp_ready(self.amqp_port):
            exited = self._proc.poll()
            if exited is not None or time.monotonic() > deadline:
                why = f"exited with {exited}" if exited is not None else f"not up in {timeout} s"
                self.stop()
                raise RabbitNodeError(f"{self.nodename} {why}; log tail:\n{self.log_tail()}")
            time.sleep(_POLL_INTERVAL)

    def stop(self, timeout: float = 30) -> None:
        """Stop the node with SIGTERM, then SIGKILL after `timeout`; safe twice."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.returncode is None:
            # The wrapper shell traps TERM and forwards it to beam, which shuts down gracefully.
            proc.send_signal(signal.SIGTERM)
            _wait_unreaped(proc.pid, timeout)
            # The leader is now a zombie or still alive: either way its pid, which is the group
            # id, cannot have been reused, so this SIGKILL reaches only the node's leftovers.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        proc.wait(10)

    def kill(self) -> None:
        """Kill the node at once with SIGKILL, as if its machine were lost: no shutdown of any kind.

        The signal goes to the node's whole process group (the wrapper shell, beam, erl_child_setup):
        the kernel then closes its sockets, so its clients and peers see the loss at once. `start`
        brings it back on the same ports and data directory.
        """
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the group id is the leader's pid (a session of its own)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait(10)

    def restart(self) -> None:
        """Stop, then start on the same ports and data directory."""
        self.stop()
        self.start()

    def __enter__(self) -> RabbitNode:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def ctl(self, *args: str, timeout: float = 30) -> str:
        """Run `rabbitmqctl -n <this node> args` with the node's cookie; return its output.

        Never the shared broker: `-n` names this node, and the private HOME holds its cookie.
        """
        if self._proc is None:
            raise RabbitNodeError(f"{self.nodename} is not running")
        done = subprocess.run(
            [str(RABBITMQCTL), "-n", self.nodename, *args],
            env=self._prepare_env(),
            cwd=self.base_dir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RabbitNodeError(f"rabbitmqctl {' '.join(args)} failed ({done.returncode}): {done.stderr}")
        return done.stdout

    def set_disk_free_limit(self, limit: str) -> None:
        """Set the node's disk free limit ("10000GB" raises the disk alarm, "1MB" clears it)."""
        self.ctl("set_disk_free_limit", limit)

    def log_tail(self, lines: int = 40) -> str:
        """Return the last lines of the node's log and of its console output."""
        parts = []
        for path in (self.log_path, self._stdout_path):
            try:
                text = path.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                continue
            parts.append(f"--- {path}\n" + "\n".join(text))
        return "\n".join(parts) or "(no log written)"

    def _prepare(self) -> dict[str, str]:
        """Write the private files and return the node's environment."""
        home = self.base_dir / "home"
        for directory in (home, self.base_dir / "mnesia", self.base_dir / "log"):
            directory.mkdir(parents=True, exist_ok=True)
        cookie = home / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(secrets.token_hex(20))
        cookie.chmod(0o600)  # Erlang refuses a cookie file others can read
        files = {
            "env.conf": "",
            "enabled_plugins": "[].\n",
            "rabbitmq.conf": _CONFIG,
        }
        for filename, text in files.items():
            (self.base_dir / filename).write_text(text)
        return self._prepare_env()

    def _prepare_env(self) -> dict[str, str]:
        """Return the environment of the node and of `rabbitmqctl` runs against it."""
        home = self.base_dir / "home"
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("RABBITMQ_", "ERL_")) and key != "NOTIFY_SOCKET"
        }
        env.update(
            HOME=str(home),
            RABBITMQ_CONF_ENV_FILE=str(self.base_dir / "env.conf"),
            RABBITMQ_CONFIG_FILE=str(self.base_dir / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.base_dir / "advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base_dir / "enabled_plugins"),
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.amqp_port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.base_dir / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.base_dir / "log"),
            ERL_EPMD_ADDRESS="127.0.0.1",
            ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        return env
