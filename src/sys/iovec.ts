// `struct iovec`, declared once: scatter/gather I/O into guest RAM (memory/io-vectors) and the data of a message
// that passes a descriptor (fd-passing) both lay it out.
import { cStruct } from './abi.js';

export const iovec = cStruct('struct iovec', 'sys/uio.h', { iov_base: 'uint64', iov_len: 'uint64' });
