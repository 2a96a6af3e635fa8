"""Settings for the test run: the normal settings, in development mode unless DEBUG is set."""

import os

os.environ.setdefault("DEBUG", "1")

from config.settings import *  # noqa: F403
