"""``ssdaq-web``: one HTTP service for what a scraper or a browser wants to know about the DAQ.

``server`` (the process: sockets, sd_notify, routes), ``poller`` (one shared ``status`` poll of
every receiver and writer, read by every request), ``metrics`` (``/metrics`` from the poller's
latest snapshot), ``page`` (the shifter's live page: ``live``, its shared readout feed and
WebSocket, ``history``, the rates plotted), ``config`` (``/etc/ssdaq/web.toml``).
"""
