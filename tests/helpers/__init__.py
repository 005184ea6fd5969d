"""Helpers shared by the tests (a package, imported as ``tests.helpers.<module>``; fixtures stay in conftest.py)."""
