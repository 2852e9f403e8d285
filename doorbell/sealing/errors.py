"""The one exception family every sealing failure belongs to."""

from __future__ import annotations


class SealingError(Exception):
    """Base of every error the sealing package raises on bad input."""


class MalformedObject(SealingError):
    """The bytes are not a well-formed sealed object (the parser names the field)."""


class BadSignature(SealingError):
    """The device signature does not verify: the object was altered or forged."""


class UntrustedDevice(SealingError):
    """The object was signed by a device this reader has not pinned."""


class NotARecipient(SealingError):
    """No stanza in the object is addressed to this reader's key."""


class DecryptionFailed(SealingError):
    """A stanza or the payload failed authenticated decryption."""


class KeyStringError(SealingError):
    """A key string is mistyped, truncated, of the wrong kind or has a bad checksum."""


class KeyFileError(SealingError):
    """A key or state file is missing, unreadable, unwritable or corrupt."""


class KeyringError(SealingError):
    """A keyring is malformed or an edit to it is not allowed."""
