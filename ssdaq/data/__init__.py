"""Pure data formats of the camera: bytes to records and back. No sockets, no event loop."""
