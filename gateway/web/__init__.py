"""The web listener (aiohttp): the admin API under ``/api/v1`` and the web terminal.

``server.py`` builds the application (security headers, JSON errors, the client address from
trusted reverse proxies) and asks each part to add its routes; ``forwarded.py`` and
``problems.py`` are pure.
"""
