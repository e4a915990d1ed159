"""The ZAP handler: decides, per CURVE handshake, whether a client key may connect.

Unknown and pending keys may connect (they can only say hello and land in *pending*),
unknown ones only as fast as ``KeyAdmission`` allows; rejected keys are refused at the
handshake. The ZAP User-Id is the client's Z85 public
key: the master maps it to the minion id bound to that key on every message, so accepting,
rejecting or deleting a key takes effect without reconnecting.
"""

import logging

import zmq
import zmq.asyncio
import zmq.utils.z85

from master.admission import KeyAdmission
from master.stats import Refusals
from saline.keys import KeyRing, KeyState
from saline.transport import ZAP_DOMAIN, ZAP_ENDPOINT

log = logging.getLogger(__name__)


class ZapHandler:
    def __init__(
        self,
        ctx: zmq.asyncio.Context,
        keys: KeyRing,
        refusals: Refusals,
        admission: KeyAdmission,
    ) -> None:
        self.keys = keys
        self.refusals = refusals
        self.admission = admission
        self.sock = ctx.socket(zmq.REP)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(ZAP_ENDPOINT)

    def decide(
        self, domain: bytes, mechanism: bytes, credentials: list[bytes], address: str = ""
    ) -> tuple[bytes, str, str]:
        """Return (status code, user id or reason, refusal counter)."""
        if domain.decode(errors="replace") != ZAP_DOMAIN:
            return b"400", "unknown ZAP domain", "handshake_refused"
        if mechanism != b"CURVE" or len(credentials) != 1 or len(credentials[0]) != 32:
            return b"400", "CURVE required", "handshake_refused"
        public = zmq.utils.z85.encode(credentials[0]).decode()
        entry = self.keys.lookup_key(public)
        if entry is not None and entry.state is KeyState.REJECTED:
            return b"400", f"rejected key of minion {entry.id}", "handshake_refused"
        if entry is None:
            too_fast = self.admission.handshake(address)
            if too_fast is not None:
                return b"400", too_fast, "new_key_rate"
        return b"200", public, ""

    async def serve(self) -> None:
        while True:
            frames = await self.sock.recv_multipart()
            if len(frames) < 6:
                self.refusals.count("zap_malformed")
                continue
            version, request_id, domain, address, _identity, mechanism = frames[:6]
            peer = address.decode(errors="replace")
            status, text, reason = self.decide(domain, mechanism, frames[6:], peer)
            if status == b"200":
                reply = [version, request_id, status, b"OK", text.encode(), b""]
            else:
                self.refusals.count(reason, f"{peer}: {text}")
                reply = [version, request_id, status, text.encode(), b"", b""]
            await self.sock.send_multipart(reply)

    def close(self) -> None:
        self.sock.close()
