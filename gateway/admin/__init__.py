"""What administrators do, once: the functions behind both the ``sshgw`` CLI and the admin API.

One module per noun (``users``, ``keys``, ``groups``, ``grants``, ``sessions``, ``audit``,
``checks``, ``containers``, ``engines``, ``recordings``, ``tokens``), over the store and the
engine, raising the project's errors. Each change is audited here (``common.record``) with who
made it (an :class:`~gateway.admin.common.Actor`: the person at the CLI, or an API token). The
``*_view`` functions are the JSON form both the CLI's ``--json`` and the API answer with.
"""
