"""SIGHUP makes a running worker adopt a pool that blfs-iscsi changed, and announce it."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys

from blfsd import auth, rpc, storage

from conftest import REPO

SLOT = 1 << 20


def start_worker(root: str) -> tuple[subprocess.Popen, str]:
    """A worker process on a directory disk; its address from its READY=1 notification."""
    notify_path = os.path.join(root, "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(20)
    proc = subprocess.Popen(
        [sys.executable, "-m", "blfsd", "worker", "--local-root", root, "--name", "w0",
         "--slots", "4", "--slot-size", str(SLOT)],
        cwd=REPO, env=dict(os.environ, NOTIFY_SOCKET=notify_path),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            fields = dict(line.split("=", 1) for line in notify.recv(4096).decode().splitlines()
                          if "=" in line)
            if fields.get("READY") == "1":
                return proc, fields["BLFS_LISTEN"]
    finally:
        notify.close()


def test_sighup_adopts_a_new_pool_generation_and_announces_it(tmp_path):
    root = str(tmp_path)
    key = auth.generate_key(os.path.join(root, "cluster.key"))
    proc, address = start_worker(root)
    disk = os.path.join(root, "disks", "w0")
    try:
        async def scenario() -> tuple:
            announced: list = []

            def pool_changed(peer, **fields):
                announced.append({"op": "pool_changed", **fields})

            peer, _ = await rpc.connect(address, key, "master", "m",
                                        handler={"pool_changed": pool_changed},
                                        expect_role="worker", default_port=7071)
            serving = asyncio.ensure_future(peer.serve())
            before = await peer.call("sync", limit=10, held=[])
            old = storage.read_manifest(disk, direct=False)
            new, changed = storage.prepare_pool(disk, "w0", 6, SLOT, durable=False,
                                                fill=False)
            assert changed and new.generation > old.generation
            proc.send_signal(signal.SIGHUP)
            for _ in range(100):
                if announced:
                    break
                await asyncio.sleep(0.05)
            pong = await peer.call("ping", limit=10)
            await peer.close()
            serving.cancel()
            return before, new, announced, pong

        before, new, announced, pong = asyncio.run(scenario())
        assert before["slots"] == 4 and before["free_slots"] == 4
        assert [(m["op"], m["generation"], m["slots"]) for m in announced] == [
            ("pool_changed", new.generation, 6)]
        assert pong["free_slots"] == 6
        assert proc.poll() is None  # still serving
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
