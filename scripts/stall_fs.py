"""A pass-through file system that can stall: `stall_fs.py BACKING MOUNTPOINT FLAG`.

Mounts BACKING at MOUNTPOINT (FUSE, in the foreground). While the file FLAG exists, every call
that changes data (create, write, flush, fsync, rename, unlink, truncate, mkdir) waits until it is
removed, as a disk whose controller stopped answering makes its callers wait; reads and lookups go
on. Used by `scripts/soak stall-disk`.
"""

import errno
import os
import sys
import time

import mfusepy as fuse


class Stalling(fuse.Operations):
    def __init__(self, root: str, flag: str) -> None:
        self.root = root
        self.flag = flag

    def _path(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    def _wait(self) -> None:
        while os.path.exists(self.flag):
            time.sleep(0.05)

    # Lookups and reads.
    def getattr(self, path, fh=None):
        st = os.lstat(self._path(path))
        keys = ("st_atime", "st_ctime", "st_gid", "st_mode", "st_mtime", "st_nlink", "st_size", "st_uid")
        return {k: getattr(st, k) for k in keys}

    def readdir(self, path, fh):
        return [".", ".."] + os.listdir(self._path(path))

    def open(self, path, flags):
        return os.open(self._path(path), flags)

    def read(self, path, size, offset, fh):
        os.lseek(fh, offset, os.SEEK_SET)
        return os.read(fh, size)

    def release(self, path, fh):
        return os.close(fh)

    def statfs(self, path):
        st = os.statvfs(self._path(path))
        keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files", "f_flag", "f_frsize", "f_namemax")
        return {k: getattr(st, k) for k in keys}

    def access(self, path, amode):
        if not os.access(self._path(path), amode):
            raise fuse.FuseOSError(errno.EACCES)

    def chmod(self, path, mode):
        self._wait()
        return os.chmod(self._path(path), mode)

    # Changes: they wait while the disk is stalled.
    def create(self, path, mode, fi=None):
        self._wait()
        return os.open(self._path(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)

    def write(self, path, data, offset, fh):
        self._wait()
        os.lseek(fh, offset, os.SEEK_SET)
        return os.write(fh, data)

    def flush(self, path, fh):
        self._wait()
        return 0

    def fsync(self, path, datasync, fh):
        self._wait()
        return os.fsync(fh)

    def truncate(self, path, length, fh=None):
        self._wait()
        with open(self._path(path), "r+b") as f:
            f.truncate(length)

    def rename(self, old, new):
        self._wait()
        return os.rename(self._path(old), self._path(new))

    def unlink(self, path):
        self._wait()
        return os.unlink(self._path(path))

    def mkdir(self, path, mode):
        self._wait()
        return os.mkdir(self._path(path), mode)

    def rmdir(self, path):
        self._wait()
        return os.rmdir(self._path(path))


def main() -> int:
    backing, mountpoint, flag = sys.argv[1:4]
    fuse.FUSE(Stalling(backing, flag), mountpoint, foreground=True, nothreads=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
