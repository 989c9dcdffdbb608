"""Scaffolding shared by the tests and the benchmarks (``bench/`` imports it too).

- :mod:`tests.support.process`: checked command runs, free ports, waiting for an SSH banner,
  stopping a process group; :class:`SetupError` when a step fails.
- :mod:`tests.support.gateway`: :class:`GatewayProcess`, one ``python -m gateway serve`` with its
  own data directory, ports and log.
- :mod:`tests.support.openssh`: OpenSSH client options (ssh, scp, sftp) and ``ssh-keygen``.
- :mod:`tests.support.containers`: the ``docker run`` line of a labelled test container.
- :mod:`tests.support.hostile`: an asyncssh client that stops reading, raw SFTP packets.
- :mod:`tests.support.memory`: a process's RSS and its growth over a while.

No pytest in here: test fixtures wrap these and turn :class:`SetupError` into a test failure.
"""
