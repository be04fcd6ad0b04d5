// Limits of guest memory that follow from the host's JavaScript engine, kept free of native bindings
// so a command can check its arguments before it loads anything heavy.
import { constants as bufferConstants } from 'node:buffer';

/**
 * The largest RAM region: each region is one typed-array view, and a typed array holds at most
 * buffer.constants.MAX_LENGTH bytes (4 GiB on Node 20, 2^53 - 1 from Node 22).
 */
export const MAX_REGION_SIZE = bufferConstants.MAX_LENGTH;
