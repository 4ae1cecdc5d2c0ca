"""CHAP for iSCSI (RFC 7143 12.1.3, RFC 1994): algorithms, responses, both roles' exchanges.

Response = H(identifier byte || secret || challenge). CHAP_A values follow the IANA "PPP
Authentication Algorithms" registry as used by iSCSI: 5 = MD5, 6 = SHA-1, 7 = SHA-256,
8 = SHA3-256. Challenges are as long as the hash output (at least 16 bytes).

``ChapResponder`` is the target side (issues a challenge, verifies CHAP_N/CHAP_R, answers the
initiator's challenge for mutual CHAP); ``ChapRequester`` is the initiator side. Both work on
already-parsed key dictionaries and raise ``AuthenticationFailure`` (login status 2/1).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable

from .errors import AuthenticationFailure, TextError
from .text import REJECT, encode_binary, pull_binary, pull_number

ALGORITHMS: dict[int, str] = {5: "md5", 6: "sha1", 7: "sha256", 8: "sha3_256"}
DEFAULT_ALGORITHMS = (7, 8, 6, 5)  # preference order when we offer / choose


def _secret(secret: bytes | str) -> bytes:
    return secret.encode() if isinstance(secret, str) else bytes(secret)


def digest_size(algorithm: int) -> int:
    return hashlib.new(ALGORITHMS[algorithm]).digest_size


def chap_response(algorithm: int, identifier: int, secret: bytes | str, challenge: bytes) -> bytes:
    """The CHAP response H(id || secret || challenge)."""
    return hashlib.new(ALGORITHMS[algorithm],
                       bytes([identifier]) + _secret(secret) + challenge).digest()


def _pull_algorithms(raw: str) -> list[int]:
    out = []
    for item in raw.split(","):
        try:
            out.append(pull_number(item))
        except TextError:
            continue  # unknown encodings are simply not acceptable
    return out


class ChapResponder:
    """Target side of one CHAP exchange.

    ``issued`` is a shared registry of challenges outstanding on *any* connection of this
    portal, so a challenge reflected from another connection is recognised too.
    """

    def __init__(self, *, user: str, secret: bytes | str, mutual_user: str | None = None,
                 mutual_secret: bytes | str | None = None,
                 algorithms: tuple[int, ...] = DEFAULT_ALGORITHMS, issued: set[bytes],
                 random_bytes: Callable[[int], bytes] = secrets.token_bytes) -> None:
        self.user = user
        self.secret = _secret(secret)
        self.mutual_user = mutual_user
        self.mutual_secret = None if mutual_secret is None else _secret(mutual_secret)
        self.algorithms = algorithms
        self.issued = issued
        self.random_bytes = random_bytes
        self.algorithm: int | None = None
        self.identifier = 0
        self.challenge = b""
        self.mutual = False
        self.done = False

    def challenge_keys(self, chap_a: str) -> list[tuple[str, str]]:
        """Answer CHAP_A=<list> with the chosen algorithm, CHAP_I and CHAP_C."""
        offered = _pull_algorithms(chap_a)
        chosen = next((a for a in offered if a in self.algorithms and a in ALGORITHMS), None)
        if chosen is None:
            raise AuthenticationFailure(f"no acceptable CHAP algorithm in CHAP_A={chap_a}")
        self.algorithm = chosen
        self.identifier = self.random_bytes(1)[0]
        self.challenge = self.random_bytes(max(16, digest_size(chosen)))
        self.issued.add(self.challenge)
        return [("CHAP_A", str(chosen)), ("CHAP_I", str(self.identifier)),
                ("CHAP_C", encode_binary(self.challenge))]

    def forget(self) -> None:
        self.issued.discard(self.challenge)

    def verify(self, keys: dict[str, str]) -> list[tuple[str, str]]:
        """Check CHAP_N/CHAP_R; for mutual CHAP answer CHAP_I/CHAP_C with CHAP_N/CHAP_R."""
        if self.algorithm is None:
            raise AuthenticationFailure("CHAP response before CHAP_A")
        try:
            name = keys["CHAP_N"]
            response = pull_binary(keys["CHAP_R"])
        except KeyError as exc:
            raise AuthenticationFailure(f"missing {exc.args[0]}") from None
        except TextError as exc:
            raise AuthenticationFailure(str(exc)) from None
        self.forget()
        expected = chap_response(self.algorithm, self.identifier, self.secret, self.challenge)
        user_ok = hmac.compare_digest(name.encode(), self.user.encode())
        if not (hmac.compare_digest(response, expected) and user_ok):
            raise AuthenticationFailure(f"CHAP authentication failed for user {name!r}")
        answer: list[tuple[str, str]] = []
        if "CHAP_I" in keys or "CHAP_C" in keys:
            if self.mutual_secret is None or self.mutual_user is None:
                raise AuthenticationFailure("mutual CHAP requested but not configured")
            if hmac.compare_digest(self.mutual_secret, self.secret):
                raise AuthenticationFailure("mutual CHAP with the same secret in both directions")
            try:
                identifier = pull_number(keys["CHAP_I"])
                challenge = pull_binary(keys["CHAP_C"])
            except (KeyError, TextError) as exc:
                raise AuthenticationFailure(f"bad mutual CHAP challenge: {exc}") from None
            if not 0 <= identifier <= 255 or len(challenge) < 1:
                raise AuthenticationFailure("bad mutual CHAP identifier/challenge")
            if challenge == self.challenge or challenge in self.issued:
                raise AuthenticationFailure("reflected CHAP challenge")
            self.mutual = True
            answer = [("CHAP_N", self.mutual_user),
                      ("CHAP_R", encode_binary(chap_response(self.algorithm, identifier,
                                                             self.mutual_secret, challenge)))]
        self.done = True
        return answer


class ChapRequester:
    """Initiator side of one CHAP exchange."""

    def __init__(self, *, user: str, secret: bytes | str, mutual_user: str | None = None,
                 mutual_secret: bytes | str | None = None,
                 algorithms: tuple[int, ...] = DEFAULT_ALGORITHMS,
                 random_bytes: Callable[[int], bytes] = secrets.token_bytes) -> None:
        self.user = user
        self.secret = _secret(secret)
        self.mutual_user = mutual_user
        self.mutual_secret = None if mutual_secret is None else _secret(mutual_secret)
        self.algorithms = algorithms
        self.random_bytes = random_bytes
        self.algorithm: int | None = None
        self.identifier = 0
        self.challenge = b""

    @property
    def mutual(self) -> bool:
        return self.mutual_secret is not None

    def algorithm_offer(self) -> list[tuple[str, str]]:
        return [("CHAP_A", ",".join(str(a) for a in self.algorithms))]

    def respond(self, keys: dict[str, str]) -> list[tuple[str, str]]:
        """Answer the target's CHAP_A/CHAP_I/CHAP_C (plus our challenge for mutual CHAP)."""
        try:
            if keys.get("CHAP_A") == REJECT:
                raise AuthenticationFailure("target rejected all offered CHAP algorithms")
            algorithm = pull_number(keys["CHAP_A"])
            identifier = pull_number(keys["CHAP_I"])
            challenge = pull_binary(keys["CHAP_C"])
        except KeyError as exc:
            raise AuthenticationFailure(f"target did not send {exc.args[0]}") from None
        except TextError as exc:
            raise AuthenticationFailure(str(exc)) from None
        if algorithm not in self.algorithms or algorithm not in ALGORITHMS:
            raise AuthenticationFailure(f"target chose CHAP_A={algorithm}, not offered")
        if not 0 <= identifier <= 255:
            raise AuthenticationFailure("bad CHAP_I")
        self.algorithm = algorithm
        out = [("CHAP_N", self.user),
               ("CHAP_R", encode_binary(chap_response(algorithm, identifier, self.secret,
                                                      challenge)))]
        if self.mutual:
            self.identifier = self.random_bytes(1)[0]
            self.challenge = self.random_bytes(max(16, digest_size(algorithm)))
            if self.challenge == challenge:  # astronomically unlikely; never reflect
                self.challenge = bytes(b ^ 0xFF for b in self.challenge)
            out += [("CHAP_I", str(self.identifier)), ("CHAP_C", encode_binary(self.challenge))]
        return out

    def verify(self, keys: dict[str, str]) -> None:
        """Check the target's answer to our challenge (mutual CHAP)."""
        if not self.mutual:
            return
        assert self.algorithm is not None and self.mutual_secret is not None
        try:
            name = keys["CHAP_N"]
            response = pull_binary(keys["CHAP_R"])
        except KeyError as exc:
            raise AuthenticationFailure(f"target did not send {exc.args[0]}") from None
        except TextError as exc:
            raise AuthenticationFailure(str(exc)) from None
        expected = chap_response(self.algorithm, self.identifier, self.mutual_secret,
                                 self.challenge)
        if name != self.mutual_user or not hmac.compare_digest(response, expected):
            raise AuthenticationFailure("target failed mutual CHAP authentication")
