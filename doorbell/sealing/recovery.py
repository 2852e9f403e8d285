"""The recovery key (docs/PROTOCOL.md section 8): 24 BIP-39 words on paper hold 256 bits,
from which a phone derives an X-Wing key and an Ed25519 signing key, enrolled with the
role ``recovery``. The words are shown once and never stored."""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from mnemonic import Mnemonic

from doorbell.sealing.errors import SealingError
from doorbell.sealing.keys import PhoneIdentity, PhoneSigningKey, RecipientPrivateKey, Suite

WORDS = 24
ENTROPY_LEN = 32
_SALT = b"doorbell recovery v1"
_LIST = Mnemonic("english")


class RecoveryWordsError(SealingError):
    """Words that are not a recovery key; the text says which word."""


@dataclass(frozen=True)
class RecoveryKey:
    entropy: bytes

    @classmethod
    def generate(cls) -> RecoveryKey:
        return cls(os.urandom(ENTROPY_LEN))

    @property
    def words(self) -> list[str]:
        return str(_LIST.to_mnemonic(self.entropy)).split()

    @classmethod
    def from_words(cls, text: str) -> RecoveryKey:
        words = text.lower().split()
        if len(words) != WORDS:
            raise RecoveryWordsError(f"a recovery key is {WORDS} words; these are {len(words)}")
        for position, word in enumerate(words, 1):
            if word not in _LIST.wordlist:
                close = difflib.get_close_matches(word, _LIST.wordlist, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise RecoveryWordsError(
                    f"word {position} ({word[:20]!r}) is not in the recovery word list{hint}"
                )
        if not _LIST.check(" ".join(words)):
            raise RecoveryWordsError(
                "the words do not check out: one of them is wrong or two are swapped "
                "(every word is a real one, so compare them with the paper again)"
            )
        return cls(bytes(_LIST.to_entropy(words)))

    def _derive(self, label: bytes) -> bytes:
        return HKDF(hashes.SHA256(), 32, _SALT, label).derive(self.entropy)

    @property
    def secret(self) -> RecipientPrivateKey:
        return RecipientPrivateKey(Suite.MLKEM768_X25519, self._derive(b"x-wing seed"))

    @property
    def signing(self) -> PhoneSigningKey:
        return PhoneSigningKey(self._derive(b"ed25519 seed"))

    @property
    def identity(self) -> PhoneIdentity:
        return PhoneIdentity(self.secret.public_key(), self.signing.public_key)
