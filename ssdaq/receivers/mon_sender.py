"""The seed API's import path of :class:`ReceiverMonSender` (``from ssdaq.receivers.mon_sender import
ReceiverMonSender``); the code lives in :mod:`ssdaq.core.mon_sender`, beside the base class that uses it."""

from ssdaq.core.mon_sender import ReceiverMonSender

__all__ = ["ReceiverMonSender"]
