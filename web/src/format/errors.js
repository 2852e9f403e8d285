// The errors of reading a sealed object: one class, a `code` saying what went wrong, and a
// message a person can act on. Codes, in the order a reader meets them (FORMAT §5, §9):
//   'malformed'  the bytes are not a well-formed sealed object (the message names the field)
//   'untrusted'  signed by a doorbell this phone has not pinned
//   'forged'     the signature does not verify, or is not strict: altered or forged
//   'not-for-us' authentic, but not sealed to this phone's key (NotARecipient)
//   'unopenable' authentic and sealed to this phone, yet a stanza or the payload does not
//                decrypt: the object is invalid
//   'rejected'   authentic and opened, but the payload breaks a rule of FORMAT §4, §4.1 or §7

export class ObjectError extends Error {
  constructor(code, message) {
    super(message);
    this.name = 'ObjectError';
    this.code = code;
  }
}

/** No stanza of the object is addressed to this phone's keys. Not an error of the object. */
export class NotARecipient extends ObjectError {
  constructor(message) {
    super('not-for-us', message);
    this.name = 'NotARecipient';
  }
}

export const malformed = (message) => new ObjectError('malformed', message);
export const rejected = (message) => new ObjectError('rejected', message);
