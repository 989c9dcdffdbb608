"""Container engines. Today: one Docker engine over its HTTP API (aiodocker)."""

from gateway.engines.docker import Container, DockerEngine, ExecStream

__all__ = ["Container", "DockerEngine", "ExecStream"]
