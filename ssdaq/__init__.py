"""ssdaq: data-acquisition receivers of the CHEC-S camera, as systemd-native daemons."""

__version__ = "1.0.0"
