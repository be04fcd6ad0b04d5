// virtio-vsock packets (virtio 1.2 §5.10.6): a little-endian struct virtio_vsock_hdr, then `len` bytes.
import { offsetOf } from '../../sys/abi.js';
import { readU64 } from '../../memory/u64.js';
import { virtioVsockHdr } from '../abi.js';

export const HEADER_SIZE = virtioVsockHdr.size;
/** The largest payload Linux puts in one packet (VIRTIO_VSOCK_MAX_PKT_BUF_SIZE); larger is malformed. */
export const MAX_PAYLOAD = 64 * 1024;
/** The host's context ID (VMADDR_CID_HOST). */
export const HOST_CID = 2;

const at = (field: string) => offsetOf(virtioVsockHdr, field);
const SRC_CID = at('src_cid');
const DST_CID = at('dst_cid');
const SRC_PORT = at('src_port');
const DST_PORT = at('dst_port');
const LEN = at('len');
const TYPE = at('type');
const OP = at('op');
const FLAGS = at('flags');
const BUF_ALLOC = at('buf_alloc');
const FWD_CNT = at('fwd_cnt');

export interface VsockHeader {
  srcCid: number;
  dstCid: number;
  srcPort: number;
  dstPort: number;
  len: number;
  type: number;
  op: number;
  flags: number;
  bufAlloc: number;
  fwdCnt: number;
}

/** CIDs are 64-bit on the wire; anything from 2^53 on cannot be a real CID and reads as -1. */
function readCid(v: DataView, offset: number): number {
  return readU64(v, offset) ?? -1;
}

export function decodeHeader(bytes: Uint8Array): VsockHeader {
  const v = new DataView(bytes.buffer, bytes.byteOffset, HEADER_SIZE);
  return {
    srcCid: readCid(v, SRC_CID),
    dstCid: readCid(v, DST_CID),
    srcPort: v.getUint32(SRC_PORT, true),
    dstPort: v.getUint32(DST_PORT, true),
    len: v.getUint32(LEN, true),
    type: v.getUint16(TYPE, true),
    op: v.getUint16(OP, true),
    flags: v.getUint32(FLAGS, true),
    bufAlloc: v.getUint32(BUF_ALLOC, true),
    fwdCnt: v.getUint32(FWD_CNT, true),
  };
}

export function encodeHeader(h: VsockHeader, into: Uint8Array = new Uint8Array(HEADER_SIZE)): Uint8Array {
  const v = new DataView(into.buffer, into.byteOffset, HEADER_SIZE);
  v.setBigUint64(SRC_CID, BigInt(h.srcCid), true);
  v.setBigUint64(DST_CID, BigInt(h.dstCid), true);
  v.setUint32(SRC_PORT, h.srcPort, true);
  v.setUint32(DST_PORT, h.dstPort, true);
  v.setUint32(LEN, h.len, true);
  v.setUint16(TYPE, h.type, true);
  v.setUint16(OP, h.op, true);
  v.setUint32(FLAGS, h.flags, true);
  v.setUint32(BUF_ALLOC, h.bufAlloc, true);
  v.setUint32(FWD_CNT, h.fwdCnt, true);
  return into;
}

/** A packet for the guest: its header and, for OP_RW, the bytes (in pieces, as the host sent them). */
export interface OutgoingPacket {
  header: VsockHeader;
  payload?: Uint8Array[];
}
