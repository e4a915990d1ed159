"""``HOST:PORT`` listen addresses (the master's and the minion's ``metrics_listen``)."""

#: a host name or IPv4 address, or ``[IPv6]``; then ``:`` and a port 1-65535
LISTEN_PATTERN = (
    r"^([A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\]):"
    r"([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$"
)


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` (already matched by :data:`LISTEN_PATTERN`) ->
    (host, port)."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)
