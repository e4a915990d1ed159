"""The master's public key as a minion trusts it: from its config, pinned by fingerprint."""

from pathlib import Path

from minion.config import MinionConfig
from saline.errors import KeyRingError
from saline.keys import check_public_key, fingerprint, is_public_key


def master_public_key(config: MinionConfig) -> str:
    """The master's Z85 key from config (inline or a file), checked against master_finger.

    :raises KeyRingError: no key, a malformed key, or a fingerprint mismatch.
    """
    value = config.master_pub
    if value is None:
        default = config.pki_dir / "master.pub"
        if not default.exists():
            raise KeyRingError(
                f"no master key: set master_pub or place the master's master.pub at {default}"
            )
        value = str(default)
    if not is_public_key(value):
        try:
            value = Path(value).read_text().strip()
        except OSError as e:
            raise KeyRingError(f"cannot read master_pub {value}: {e.strerror}") from e
    public = check_public_key(value)
    if config.master_finger is not None:
        actual = fingerprint(public)
        if actual.lower() != config.master_finger.strip().lower():
            raise KeyRingError(
                f"master key fingerprint {actual} differs from master_finger "
                f"{config.master_finger}: refusing to talk to this master"
            )
    return public
