// What can go wrong with a LUKS image, by kind. Messages are one line and never carry a passphrase or a key.

/** Base class: anything the LUKS code refuses. */
export class LuksError extends Error {
  override name = 'LuksError';
}

/** The image is not well-formed LUKS: bad magic or checksum, fields out of range, areas that overlap. */
export class LuksFormatError extends LuksError {
  override name = 'LuksFormatError';
}

/** A well-formed image using something this implementation does not do (integrity, another cipher, requirements). */
export class LuksUnsupportedError extends LuksError {
  override name = 'LuksUnsupportedError';
}

/** A KDF cost above the configured limits: deriving the key would take unbounded time or memory. */
export class LuksCostError extends LuksError {
  override name = 'LuksCostError';
}

/** No keyslot opens with the passphrase given. */
export class LuksPassphraseError extends LuksError {
  override name = 'LuksPassphraseError';
}
