"""What tests share besides fixtures: the run's credentials, cluster defaults and helpers.

``tests/conftest.py`` keeps fixtures and hooks only; test modules import from here
(``from tests.support.clusters import SMALL_TRACT``), never from conftest.
"""
