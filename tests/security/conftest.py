"""The attack tier: a real gateway, a real Docker engine, stock and hostile clients.

Same fixtures as ``tests/e2e`` (``gateway``, ``gateway_factory``, ``make_container`` and the
images): each test here is an attack that succeeded on an earlier gateway and must now fail.
"""

from tests.e2e.conftest import gateway, gateway_factory, pytest_runtest_makereport

__all__ = ["gateway", "gateway_factory", "pytest_runtest_makereport"]
