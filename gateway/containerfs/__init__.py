"""A container's file system over exec'd ``sh``/``tar``/``dd``: nothing installed in the image."""

from gateway.containerfs.errors import ContainerGone, FSError, NoShell, Unsupported
from gateway.containerfs.files import ReadFile, WriteFile
from gateway.containerfs.fs import ContainerFS, VFSStat
from gateway.containerfs.shell import Stat

__all__ = [
    "ContainerFS",
    "ContainerGone",
    "FSError",
    "NoShell",
    "ReadFile",
    "Stat",
    "Unsupported",
    "VFSStat",
    "WriteFile",
]
