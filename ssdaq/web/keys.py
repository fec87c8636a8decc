"""The web application's shared objects, by key: one name for each, typed where aiohttp can.

aiohttp 3.9 (Debian 13's) warns when an application stores objects under plain strings and offers
typed ``web.AppKey`` instead; 3.8 (Debian 12's) has no ``AppKey``. Both get the same names.
"""

from typing import Any

from aiohttp import web

from ssdaq.web.config import WebConfig
from ssdaq.web.history import RateHistory
from ssdaq.web.live import LiveHub
from ssdaq.web.metrics import Metrics
from ssdaq.web.poller import StatusPoller


def _key(name: str, kind: type) -> Any:
    """``web.AppKey(name, kind)`` where aiohttp has it, else ``name``."""
    make = getattr(web, "AppKey", None)
    return make(name, kind) if make is not None else name


CONFIG = _key("config", WebConfig)
POLLER = _key("poller", StatusPoller)
METRICS = _key("metrics", Metrics)
HUB = _key("live_hub", LiveHub)
HISTORY = _key("rate_history", RateHistory)
