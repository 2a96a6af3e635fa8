from __future__ import annotations

from typing import Any


def pytest_addoption(parser: Any, pluginmanager: Any) -> None:
    # pyproject.toml sets DJANGO_SETTINGS_MODULE for pytest-django; with `-p no:django` pytest
    # would warn about an unknown option, and filterwarnings=error turns that into a failure.
    if not pluginmanager.has_plugin("django"):
        parser.addini("DJANGO_SETTINGS_MODULE", "Django settings (used by pytest-django)")
