"""Sealing: the sealed-object format, keys, the keyring, the sealer and the reader.

The rest of the program uses only the names exported here; HPKE suites, stanza
encoding and byte layouts stay inside this package.
"""

from doorbell.sealing import commands, enrolment, live, recovery
from doorbell.sealing.durable import sync_directory, write_atomic
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
from doorbell.sealing.format import (
    MAX_OBJECT,
    RESERVATION_BLOCK,
    SIGNATURE_LEN,
    ZERO_PREV,
    Envelope,
    Kind,
    chain_hash,
    check_meta,
    loads_strict,
    recipient_tag,
)
from doorbell.sealing.keyring import Keyring, KeyringFile, Recipient, Role
from doorbell.sealing.keys import (
    DevicePublicKey,
    DeviceSigningKey,
    PhoneIdentity,
    PhoneSigningKey,
    PhoneVerifyKey,
    RecipientPrivateKey,
    RecipientPublicKey,
    Suite,
    read_key_file,
    save_key_file,
)
from doorbell.sealing.reader import Opened, Reader, Scratch, check_canonical_ed25519_key
from doorbell.sealing.sealer import NoRecipients, SealedObject, Sealer, object_name, seal_bytes
from doorbell.sealing.state import (
    DEVICE_KEY,
    ChainHead,
    KeyringStore,
    load_device_key,
    prepare_state_dir,
)

__all__ = [
    "DEVICE_KEY",
    "MAX_OBJECT",
    "RESERVATION_BLOCK",
    "SIGNATURE_LEN",
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
    "KeyringFile",
    "KeyringStore",
    "Kind",
    "MalformedObject",
    "NoRecipients",
    "NotARecipient",
    "Opened",
    "PhoneIdentity",
    "PhoneSigningKey",
    "PhoneVerifyKey",
    "Reader",
    "Recipient",
    "RecipientPrivateKey",
    "RecipientPublicKey",
    "Role",
    "Scratch",
    "SealedObject",
    "Sealer",
    "SealingError",
    "Suite",
    "UntrustedDevice",
    "chain_hash",
    "check_canonical_ed25519_key",
    "check_meta",
    "commands",
    "enrolment",
    "live",
    "load_device_key",
    "loads_strict",
    "object_name",
    "prepare_state_dir",
    "read_key_file",
    "recipient_tag",
    "recovery",
    "save_key_file",
    "seal_bytes",
    "sync_directory",
    "write_atomic",
]
