"""This node's own disk, as the worker uses it: the slot pool (manifest, leases) and the
block device under it."""
from __future__ import annotations

import logging
import os
from typing import Optional

from .. import storage
from ..config import Config
from ..errors import BlfsError

log = logging.getLogger("blfs.worker")


class OwnDisk:
    """The pool on DISKS_ROOT/NAME: prepared here only for --local (blfs-iscsi prepares it
    in a cluster), leased slot by slot to attempts, adopted again after a change (SIGHUP)."""

    def __init__(self, config: Config):
        self.config = config
        self.name = config.worker_name
        self.path = os.path.join(config.disks_root, self.name)
        self.manifest: Optional[storage.Manifest] = None
        self.leases: Optional[storage.SlotLeases] = None
        self.device: Optional[str] = None  # None outside a mount of a block device

    def open(self) -> None:
        """The pool, prepared here (--local) or as blfs-iscsi left it; leases; device."""
        cfg = self.config
        if cfg.prepare_pool:
            self.manifest, changed = storage.prepare_pool(
                self.path, self.name, cfg.slot_count, cfg.slot_size, cfg.durable_pool,
                cfg.fill_pool)
            if changed:
                log.info("prepared pool on %s: %d slots of %d bytes, generation %d",
                         self.path, self.manifest.slot_count, self.manifest.slot_size,
                         self.manifest.generation)
        else:
            self.manifest = storage.check_pool(self.path)
            if self.manifest is None:
                raise BlfsError(f"no prepared pool on {self.path} (run blfs-iscsi up)")
        self.leases = storage.SlotLeases(self.manifest.slot_count)
        self.device = storage.block_device_of(self.path)

    def reload(self) -> Optional[storage.Manifest]:
        """The pool as blfs-iscsi left it, adopted if it changed (the new manifest), else
        None. Leases of slots that are gone are dropped."""
        manifest = storage.check_pool(self.path, self.config.fill_pool)
        if manifest is None:
            log.error("SIGHUP: no complete pool on %s; keeping generation %d", self.path,
                      self.manifest.generation, extra={"BLFS_NODE": self.name})
            return None
        if manifest == self.manifest:
            log.info("SIGHUP: pool unchanged (generation %d)", manifest.generation)
            return None
        self.manifest = manifest
        self.leases.resize(manifest.slot_count)
        log.warning("pool on %s is now generation %d, %d slots of %d bytes", self.path,
                    manifest.generation, manifest.slot_count, manifest.slot_size,
                    extra={"BLFS_NODE": self.name})
        return manifest

    def usage(self) -> dict:
        """What changes while we run: free slots, and room on the disk for datasets."""
        info: dict = {"free_slots": self.leases.free_count()}
        try:
            vfs = os.statvfs(self.path)
            info.update(disk_bytes=vfs.f_blocks * vfs.f_frsize,
                        disk_free=vfs.f_bavail * vfs.f_frsize)
        except OSError:
            pass
        return info

    def describe(self) -> dict:
        """What the master learns at sync: the pool's shape and where the disk is."""
        m = self.manifest
        return {"generation": m.generation, "slots": m.slot_count, "slot_size": m.slot_size,
                "disk": self.path, "device": self.device or ""}
