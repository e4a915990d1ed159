"""The one exception root of saline; each room translates foreign errors at its edge."""


class SalineError(Exception):
    """Root of every error saline raises on purpose."""


class ConfigError(SalineError):
    """A configuration file is missing, unparsable or invalid (message names file, line, field)."""


class ProtocolError(SalineError):
    """A frame could not be decoded or validated (malformed, oversized, version, kind)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        #: short machine-readable cause, used as a counter label
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


class TransportError(SalineError):
    """A socket operation failed (translated from zmq.ZMQError / OSError)."""


class KeyRingError(SalineError):
    """A key is missing, malformed, or in the wrong state for the requested operation."""


class TargetError(SalineError):
    """A target expression could not be parsed."""


class ClientError(SalineError):
    """The local client API refused or failed a request."""


class StateError(SalineError):
    """A state tree failed to render, validate or order (message names file, line, field)."""


class ExecutionError(SalineError):
    """An expected failure of an execution function (bad argument, missing file...).

    The minion's executor turns it into a failed return ``{"error": ..., "message": ...}``.
    """
