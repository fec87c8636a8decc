"""The one error of the pure wire-format code: bytes that do not follow the format."""


class FormatError(ValueError):
    """Input bytes do not follow the wire format. ``reason`` names the loss counter to bump."""

    def __init__(self, reason: str, msg: str) -> None:
        self.reason = reason
        super().__init__(msg)
