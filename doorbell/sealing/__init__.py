"""Sealing: the sealed-object format, keys, the keyring, the sealer and the reader.

The rest of the program uses only the names exported here; HPKE suites, stanza
encoding and byte layouts stay inside this package.
"""

from doorbell.sealing.durable import write_atomic
from doorbell.sealing.errors import (
    BadSignature,
    DecryptionFailed,
    KeyFileError,
    KeyringError,
    KeyStringError,
    MalformedObject,
    NotARecipient,
    SealingError,
    UntrustedDevice,
)
from doorbell.sealing.format import MAX_OBJECT, ZERO_PREV, Envelope, Kind
from doorbell.sealing.keyring import Keyring, Recipient
from doorbell.sealing.keys import (
    DevicePublicKey,
    DeviceSigningKey,
    RecipientPrivateKey,
    RecipientPublicKey,
    Suite,
    read_key_file,
    save_key_file,
)
from doorbell.sealing.reader import Opened, Reader
from doorbell.sealing.sealer import NoRecipients, SealedObject, Sealer, object_name
from doorbell.sealing.state import ChainHead, KeyringStore, load_device_key, prepare_state_dir

__all__ = [
    "MAX_OBJECT",
    "ZERO_PREV",
    "BadSignature",
    "ChainHead",
    "DecryptionFailed",
    "DevicePublicKey",
    "DeviceSigningKey",
    "Envelope",
    "KeyFileError",
    "KeyStringError",
    "Keyring",
    "KeyringError",
    "KeyringStore",
    "Kind",
    "MalformedObject",
    "NoRecipients",
    "NotARecipient",
    "Opened",
    "Reader",
    "Recipient",
    "RecipientPrivateKey",
    "RecipientPublicKey",
    "SealedObject",
    "Sealer",
    "SealingError",
    "Suite",
    "UntrustedDevice",
    "load_device_key",
    "object_name",
    "prepare_state_dir",
    "read_key_file",
    "save_key_file",
    "write_atomic",
]
