#!/usr/bin/env python3
"""A real multi-node Ray cluster on this machine, for tests, benchmarks and trying
``desra-fast run --engine ray --ray-address ...`` without a cloud.

Each node is its own ``ray start`` process group (head first, then the workers), every node bound
to 127.0.0.1, token authentication on (Ray 2.60 defaults to it: the token file reaches every node
and the driver through ``RAY_AUTH_TOKEN_PATH``), no dashboard, a small object store, its own
``--temp-dir`` and ports, so that it never meets a ``ray.init()`` instance of the same user.
Stopping kills exactly the process groups it started, then any leftover process whose command
line names its private temp dir (Ray's workers carry it), and removes that dir.

    python scripts/ray_local_cluster.py run --nodes 2 -- desra-fast run --engine ray \\
        --ray-address '{address}' --lr LR --gan-model G.pth --mse-model M.pth --out OUT
    python scripts/ray_local_cluster.py start --nodes 2 --state cluster.json   # prints the env
    python scripts/ray_local_cluster.py stop --state cluster.json

Ray rewrites a loopback ``--node-ip-address`` to the machine's outward address on a multi-node
cluster (and refuses worker nodes when told the machine is single-node), which would put the
worker node's gRPC servers on a public interface; the worker nodes are therefore started by
Ray's own ``ray start`` entry point with that one rewrite switched off (``_WORKER_START``), and
every process gets ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` so that the drivers and Ray workers
keep 127.0.0.1 too.

Standard library only: the tests import it without importing Ray into the test process.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

LOOPBACK = "127.0.0.1"

# Ray's ``ray start`` for a worker node, with the loopback rewrite off (see the module docstring).
_WORKER_START = (
    "import os, sys\n"
    "from ray._private import services\n"
    "services.resolve_ip_for_localhost = lambda host: host\n"
    "os.environ['RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER'] = '0'\n"
    "from ray.scripts.scripts import main\n"
    "sys.argv[0] = 'ray'\n"
    "main()\n"
)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie has already ended)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


class LocalRayCluster:
    """A head node and ``nodes - 1`` worker nodes, each a ``ray start`` process group.

    Args:
        nodes: number of nodes (>= 1), the head included.
        cpus_per_node: logical CPUs of each node (``--num-cpus``).
        object_store_bytes: object store of each node (``--object-store-memory``, >= 75 MiB).
        root: parent folder of the private temp dir (default: the system's temp folder; Ray's
            socket paths must stay under ~100 characters, so keep it short).
        start_timeout: seconds allowed to one ``ray start``.
    """

    def __init__(self, nodes: int = 2, cpus_per_node: int = 1, object_store_bytes: int = 100 << 20,
                 root: Optional[str] = None, start_timeout: float = 180.0):
        if nodes < 1:
            raise ValueError(f"nodes must be >= 1, got {nodes}")
        self.nodes, self.cpus, self.store = int(nodes), int(cpus_per_node), int(object_store_bytes)
        self.start_timeout = start_timeout
        self.dir = tempfile.mkdtemp(prefix="dfray", dir=root)
        self.token_path = os.path.join(self.dir, "auth_token")
        self.port = free_port()
        self.address = f"{LOOPBACK}:{self.port}"
        self.pgids: List[Optional[int]] = []  # per node, None once killed
        self.logs: List[str] = []

    # -- environment ---------------------------------------------------------------------------
    @property
    def env(self) -> Dict[str, str]:
        """Variables a driver (or ``ray start``) needs to join this cluster: token auth on, the
        token file, loopback addresses kept."""
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": self.token_path,
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}

    def driver_env(self, base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
        """``base`` (default ``os.environ``) with :attr:`env`, without a token from elsewhere."""
        env = dict(os.environ if base is None else base)
        env.pop("RAY_AUTH_TOKEN", None)
        env.pop("RAY_ADDRESS", None)
        env.update(self.env)
        return env

    # -- start / stop --------------------------------------------------------------------------
    def start(self) -> "LocalRayCluster":
        fd = os.open(self.token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
        try:
            for i in range(self.nodes):
                self._start_node_retrying(i)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_node_retrying(self, i: int, attempts: int = 3) -> None:
        """``ray start`` of node ``i``, again after a failure: Ray gives a raylet a fixed 30 s to
        register, which an overloaded machine can miss."""
        for attempt in range(attempts):
            try:
                return self._start_node(i)
            except RuntimeError:
                if attempt == attempts - 1:
                    raise
                self.kill_node(i)  # what the failed start left, before a fresh one
                self.pgids.pop()
                if i == 0:
                    self.port = free_port()
                    self.address = f"{LOOPBACK}:{self.port}"

    def _node_args(self, i: int) -> List[str]:
        args = ["start", "--node-ip-address", LOOPBACK, "--num-cpus", str(self.cpus), "--num-gpus", "0",
                "--object-store-memory", str(self.store), "--temp-dir", os.path.join(self.dir, f"n{i}"),
                "--node-manager-port", str(free_port()), "--object-manager-port", str(free_port()),
                "--metrics-export-port", str(free_port()), "--runtime-env-agent-port", str(free_port()),
                "--dashboard-agent-grpc-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port()),
                "--min-worker-port", "0", "--max-worker-port", "0", "--disable-usage-stats",
                "--log-style", "record"]
        if i == 0:
            # the dashboard process still starts (without its UI): loopback and a port of its own
            return args + ["--head", "--port", str(self.port), "--include-dashboard", "false",
                           "--dashboard-host", LOOPBACK, "--dashboard-port", str(free_port())]
        return args + ["--address", self.address]

    def _start_node(self, i: int) -> None:
        if i == 0:
            cmd = [os.path.join(os.path.dirname(sys.executable), "ray")]
            if not os.path.exists(cmd[0]):
                cmd = [sys.executable, "-c", "from ray.scripts.scripts import main; main()"]
        else:
            cmd = [sys.executable, "-c", _WORKER_START]
        env = self.driver_env()
        if i > 0:  # Ray reads it at import; _WORKER_START sets it for the node's children
            env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
        log = os.path.join(self.dir, f"node{i}.log")
        self.logs[i:] = [log]
        with open(log, "wb") as fh:
            # its own session (process group): the raylet, its agents and workers stay in it after
            # `ray start` returns, so that one killpg stops (or kills) exactly this node
            proc = subprocess.Popen(cmd + self._node_args(i), stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        self.pgids.append(proc.pid)
        try:
            rc = proc.wait(timeout=self.start_timeout)
        except subprocess.TimeoutExpired:
            rc = None
        if rc != 0:
            raise RuntimeError(f"ray start of node {i} failed (exit {rc}): {self.log_tail(i)}")

    def log_tail(self, i: int, n: int = 1500) -> str:
        try:
            with open(self.logs[i], "rb") as fh:
                return fh.read().decode(errors="replace")[-n:]
        except (OSError, IndexError):
            return ""

    def kill_node(self, i: int, sig: int = signal.SIGKILL) -> None:
        """Kill node ``i`` with ``sig``: its process group (raylet, object store, agents) and the
        Ray workers it spawned (they run in process groups of their own)."""
        pgid = self.pgids[i]
        if pgid is None:
            return
        for pid in self._members({pgid}, None):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if sig == signal.SIGKILL:
            self.pgids[i] = None

    def pids(self) -> List[int]:
        """Live processes of this cluster: its process groups, any process whose command line
        names a node's temp dir, and their descendants (Ray's workers set up their own process
        groups and rename themselves ``ray::...``)."""
        # a path under a node's temp dir, as Ray's processes take it (``.../n0/session_...``): not
        # the bare dir, which a shell or script merely naming this cluster may carry too
        return self._members({g for g in self.pgids if g is not None}, os.path.join(self.dir, "n").encode())

    @staticmethod
    def _members(groups, mark: Optional[bytes]) -> List[int]:
        procs = {}  # pid -> (ppid, pgid); zombies are already dead
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            pid = int(name)
            try:
                with open(f"/proc/{pid}/stat", "rb") as fh:
                    fields = fh.read().rsplit(b")", 1)[-1].split()
                cmdline = b""
                if mark is not None:
                    with open(f"/proc/{pid}/cmdline", "rb") as fh:
                        cmdline = fh.read()
            except OSError:
                continue
            if len(fields) < 3 or fields[0] == b"Z":
                continue
            procs[pid] = (int(fields[1]), int(fields[2]), mark is not None and mark in cmdline)
        found = {pid for pid, (_, pgid, marked) in procs.items() if pgid in groups or marked}
        grew = True
        while grew:  # descendants of what was found
            more = {pid for pid, (ppid, _, _) in procs.items() if ppid in found and pid not in found}
            found |= more
            grew = bool(more)
        found.discard(os.getpid())
        return sorted(found)

    def stop(self, timeout: float = 10.0) -> List[int]:
        """Stop every process this cluster started (SIGTERM, then SIGKILL after ``timeout``),
        and remove its temp dir; returns the processes still alive after that (none expected).
        Safe to call more than once."""
        tracked = set(self.pids())  # before the raylets die: their workers are found through them
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pgid in self.pgids:
                if pgid is not None:
                    try:
                        os.killpg(pgid, sig)
                    except ProcessLookupError:
                        pass
            tracked |= set(self.pids())
            for pid in tracked:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + (timeout if sig == signal.SIGTERM else 10.0)
            while time.monotonic() < deadline:
                tracked = {p for p in tracked | set(self.pids()) if _alive(p)}
                if not tracked:
                    break
                time.sleep(0.2)
            if not tracked:
                break
        self.pgids = [None] * len(self.pgids)
        shutil.rmtree(self.dir, ignore_errors=True)
        return sorted(tracked)

    def __enter__(self) -> "LocalRayCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def state(self) -> dict:
        return {"dir": self.dir, "address": self.address, "pgids": self.pgids, "env": self.env,
                "nodes": self.nodes}

    @classmethod
    def from_state(cls, state: dict) -> "LocalRayCluster":
        self = cls.__new__(cls)
        self.dir, self.address, self.pgids = state["dir"], state["address"], list(state["pgids"])
        self.nodes, self.logs = state["nodes"], []
        self.token_path = os.path.join(self.dir, "auth_token")
        return self


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("start", "run"):
        p = sub.add_parser(name)
        p.add_argument("--nodes", type=int, default=2)
        p.add_argument("--cpus-per-node", type=int, default=1)
        p.add_argument("--object-store-mb", type=int, default=100)
        if name == "start":
            p.add_argument("--state", required=True, help="JSON file recording what was started")
        else:
            p.add_argument("command", nargs=argparse.REMAINDER,
                           help="command to run with the cluster's env; '{address}' is replaced")
    p = sub.add_parser("stop")
    p.add_argument("--state", required=True)
    a = ap.parse_args(argv)
    if a.cmd == "stop":
        with open(a.state) as fh:
            LocalRayCluster.from_state(json.load(fh)).stop()
        os.unlink(a.state)
        return 0
    cluster = LocalRayCluster(a.nodes, a.cpus_per_node, a.object_store_mb << 20).start()
    if a.cmd == "start":
        with open(a.state, "w") as fh:
            json.dump(cluster.state(), fh)
        for k, v in cluster.env.items():
            print(f"export {k}={v}")
        print(f"# address: {cluster.address}")
        return 0
    cmd = [c.replace("{address}", cluster.address) for c in a.command if c != "--"]
    try:
        return subprocess.call(cmd, env=cluster.driver_env())
    finally:
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
