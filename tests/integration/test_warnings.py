"""Building and serving the app raises no deprecation warnings of litestar's or convtree's own."""

from __future__ import annotations

import warnings

from litestar.exceptions import LitestarDeprecationWarning

from service.api.app import create_app
from service.config import Settings


def test_building_the_app_warns_of_no_deprecation() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        create_app("postgresql://unused", Settings())
    deprecations = [
        str(w.message) for w in caught if issubclass(w.category, (LitestarDeprecationWarning, DeprecationWarning))
    ]
    assert deprecations == []
