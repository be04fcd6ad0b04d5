// The virtio ABI as the Linux UAPI headers spell it. Declared through src/kvm/abi.ts so the ABI
// conformance test compiles the real headers and checks every value, struct size and field offset.
import { constant, cStruct, offsetOf } from '../sys/abi.js';

const MMIO = 'linux/virtio_mmio.h';
const CONFIG = 'linux/virtio_config.h';
const RING = 'linux/virtio_ring.h';
const IDS = 'linux/virtio_ids.h';
const BLK = 'linux/virtio_blk.h';
const VSOCK = 'linux/virtio_vsock.h';

// virtio-mmio register offsets (virtio 1.2 §4.2.2).
export const VIRTIO_MMIO_MAGIC_VALUE = constant('VIRTIO_MMIO_MAGIC_VALUE', MMIO, 0x000);
export const VIRTIO_MMIO_VERSION = constant('VIRTIO_MMIO_VERSION', MMIO, 0x004);
export const VIRTIO_MMIO_DEVICE_ID = constant('VIRTIO_MMIO_DEVICE_ID', MMIO, 0x008);
export const VIRTIO_MMIO_VENDOR_ID = constant('VIRTIO_MMIO_VENDOR_ID', MMIO, 0x00c);
export const VIRTIO_MMIO_DEVICE_FEATURES = constant('VIRTIO_MMIO_DEVICE_FEATURES', MMIO, 0x010);
export const VIRTIO_MMIO_DEVICE_FEATURES_SEL = constant('VIRTIO_MMIO_DEVICE_FEATURES_SEL', MMIO, 0x014);
export const VIRTIO_MMIO_DRIVER_FEATURES = constant('VIRTIO_MMIO_DRIVER_FEATURES', MMIO, 0x020);
export const VIRTIO_MMIO_DRIVER_FEATURES_SEL = constant('VIRTIO_MMIO_DRIVER_FEATURES_SEL', MMIO, 0x024);
export const VIRTIO_MMIO_QUEUE_SEL = constant('VIRTIO_MMIO_QUEUE_SEL', MMIO, 0x030);
export const VIRTIO_MMIO_QUEUE_NUM_MAX = constant('VIRTIO_MMIO_QUEUE_NUM_MAX', MMIO, 0x034);
export const VIRTIO_MMIO_QUEUE_NUM = constant('VIRTIO_MMIO_QUEUE_NUM', MMIO, 0x038);
export const VIRTIO_MMIO_QUEUE_READY = constant('VIRTIO_MMIO_QUEUE_READY', MMIO, 0x044);
export const VIRTIO_MMIO_QUEUE_NOTIFY = constant('VIRTIO_MMIO_QUEUE_NOTIFY', MMIO, 0x050);
export const VIRTIO_MMIO_INTERRUPT_STATUS = constant('VIRTIO_MMIO_INTERRUPT_STATUS', MMIO, 0x060);
export const VIRTIO_MMIO_INTERRUPT_ACK = constant('VIRTIO_MMIO_INTERRUPT_ACK', MMIO, 0x064);
export const VIRTIO_MMIO_STATUS = constant('VIRTIO_MMIO_STATUS', MMIO, 0x070);
export const VIRTIO_MMIO_QUEUE_DESC_LOW = constant('VIRTIO_MMIO_QUEUE_DESC_LOW', MMIO, 0x080);
export const VIRTIO_MMIO_QUEUE_DESC_HIGH = constant('VIRTIO_MMIO_QUEUE_DESC_HIGH', MMIO, 0x084);
export const VIRTIO_MMIO_QUEUE_AVAIL_LOW = constant('VIRTIO_MMIO_QUEUE_AVAIL_LOW', MMIO, 0x090);
export const VIRTIO_MMIO_QUEUE_AVAIL_HIGH = constant('VIRTIO_MMIO_QUEUE_AVAIL_HIGH', MMIO, 0x094);
export const VIRTIO_MMIO_QUEUE_USED_LOW = constant('VIRTIO_MMIO_QUEUE_USED_LOW', MMIO, 0x0a0);
export const VIRTIO_MMIO_QUEUE_USED_HIGH = constant('VIRTIO_MMIO_QUEUE_USED_HIGH', MMIO, 0x0a4);
export const VIRTIO_MMIO_SHM_SEL = constant('VIRTIO_MMIO_SHM_SEL', MMIO, 0x0ac);
export const VIRTIO_MMIO_SHM_LEN_LOW = constant('VIRTIO_MMIO_SHM_LEN_LOW', MMIO, 0x0b0);
export const VIRTIO_MMIO_SHM_LEN_HIGH = constant('VIRTIO_MMIO_SHM_LEN_HIGH', MMIO, 0x0b4);
export const VIRTIO_MMIO_SHM_BASE_LOW = constant('VIRTIO_MMIO_SHM_BASE_LOW', MMIO, 0x0b8);
export const VIRTIO_MMIO_SHM_BASE_HIGH = constant('VIRTIO_MMIO_SHM_BASE_HIGH', MMIO, 0x0bc);
export const VIRTIO_MMIO_CONFIG_GENERATION = constant('VIRTIO_MMIO_CONFIG_GENERATION', MMIO, 0x0fc);
export const VIRTIO_MMIO_CONFIG = constant('VIRTIO_MMIO_CONFIG', MMIO, 0x100);
export const VIRTIO_MMIO_INT_VRING = constant('VIRTIO_MMIO_INT_VRING', MMIO, 1 << 0);
export const VIRTIO_MMIO_INT_CONFIG = constant('VIRTIO_MMIO_INT_CONFIG', MMIO, 1 << 1);
/** "virt" in little-endian; the header documents it but defines no macro. */
export const VIRTIO_MMIO_MAGIC = 0x74726976;

// Device status bits (§2.1).
export const VIRTIO_CONFIG_S_ACKNOWLEDGE = constant('VIRTIO_CONFIG_S_ACKNOWLEDGE', CONFIG, 1);
export const VIRTIO_CONFIG_S_DRIVER = constant('VIRTIO_CONFIG_S_DRIVER', CONFIG, 2);
export const VIRTIO_CONFIG_S_DRIVER_OK = constant('VIRTIO_CONFIG_S_DRIVER_OK', CONFIG, 4);
export const VIRTIO_CONFIG_S_FEATURES_OK = constant('VIRTIO_CONFIG_S_FEATURES_OK', CONFIG, 8);
export const VIRTIO_CONFIG_S_NEEDS_RESET = constant('VIRTIO_CONFIG_S_NEEDS_RESET', CONFIG, 0x40);
export const VIRTIO_CONFIG_S_FAILED = constant('VIRTIO_CONFIG_S_FAILED', CONFIG, 0x80);

// Feature bit numbers (§6).
export const VIRTIO_F_VERSION_1 = constant('VIRTIO_F_VERSION_1', CONFIG, 32);
export const VIRTIO_RING_F_INDIRECT_DESC = constant('VIRTIO_RING_F_INDIRECT_DESC', RING, 28);
export const VIRTIO_RING_F_EVENT_IDX = constant('VIRTIO_RING_F_EVENT_IDX', RING, 29);

// Split virtqueue layout (§2.7).
export const VRING_DESC_F_NEXT = constant('VRING_DESC_F_NEXT', RING, 1);
export const VRING_DESC_F_WRITE = constant('VRING_DESC_F_WRITE', RING, 2);
export const VRING_DESC_F_INDIRECT = constant('VRING_DESC_F_INDIRECT', RING, 4);
export const VRING_USED_F_NO_NOTIFY = constant('VRING_USED_F_NO_NOTIFY', RING, 1);
export const VRING_AVAIL_F_NO_INTERRUPT = constant('VRING_AVAIL_F_NO_INTERRUPT', RING, 1);
export const VRING_AVAIL_ALIGN_SIZE = constant('VRING_AVAIL_ALIGN_SIZE', RING, 2);
export const VRING_USED_ALIGN_SIZE = constant('VRING_USED_ALIGN_SIZE', RING, 4);
export const VRING_DESC_ALIGN_SIZE = constant('VRING_DESC_ALIGN_SIZE', RING, 16);

export const vringDesc = cStruct('struct vring_desc', RING, {
  addr: 'uint64_t',
  len: 'uint32_t',
  flags: 'uint16_t',
  next: 'uint16_t',
});
export const vringUsedElem = cStruct('struct vring_used_elem', RING, { id: 'uint32_t', len: 'uint32_t' });
export const DESC_SIZE = vringDesc.size;
export const DESC_ADDR = offsetOf(vringDesc, 'addr');
export const DESC_LEN = offsetOf(vringDesc, 'len');
export const DESC_FLAGS = offsetOf(vringDesc, 'flags');
export const DESC_NEXT = offsetOf(vringDesc, 'next');
export const USED_ELEM_SIZE = vringUsedElem.size;

// Device IDs (§5).
export const VIRTIO_ID_BLOCK = constant('VIRTIO_ID_BLOCK', IDS, 2);
export const VIRTIO_ID_VSOCK = constant('VIRTIO_ID_VSOCK', IDS, 19);

// Block device (§5.2).
export const VIRTIO_BLK_F_SEG_MAX = constant('VIRTIO_BLK_F_SEG_MAX', BLK, 2);
export const VIRTIO_BLK_F_RO = constant('VIRTIO_BLK_F_RO', BLK, 5);
export const VIRTIO_BLK_F_BLK_SIZE = constant('VIRTIO_BLK_F_BLK_SIZE', BLK, 6);
export const VIRTIO_BLK_F_FLUSH = constant('VIRTIO_BLK_F_FLUSH', BLK, 9);
export const VIRTIO_BLK_F_DISCARD = constant('VIRTIO_BLK_F_DISCARD', BLK, 13);
export const VIRTIO_BLK_F_WRITE_ZEROES = constant('VIRTIO_BLK_F_WRITE_ZEROES', BLK, 14);
export const VIRTIO_BLK_ID_BYTES = constant('VIRTIO_BLK_ID_BYTES', BLK, 20);
export const VIRTIO_BLK_T_IN = constant('VIRTIO_BLK_T_IN', BLK, 0);
export const VIRTIO_BLK_T_OUT = constant('VIRTIO_BLK_T_OUT', BLK, 1);
export const VIRTIO_BLK_T_FLUSH = constant('VIRTIO_BLK_T_FLUSH', BLK, 4);
export const VIRTIO_BLK_T_GET_ID = constant('VIRTIO_BLK_T_GET_ID', BLK, 8);
export const VIRTIO_BLK_T_DISCARD = constant('VIRTIO_BLK_T_DISCARD', BLK, 11);
export const VIRTIO_BLK_T_WRITE_ZEROES = constant('VIRTIO_BLK_T_WRITE_ZEROES', BLK, 13);
export const VIRTIO_BLK_S_OK = constant('VIRTIO_BLK_S_OK', BLK, 0);
export const VIRTIO_BLK_S_IOERR = constant('VIRTIO_BLK_S_IOERR', BLK, 1);
export const VIRTIO_BLK_S_UNSUPP = constant('VIRTIO_BLK_S_UNSUPP', BLK, 2);
export const VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP = constant('VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP', BLK, 1);

export const virtioBlkGeometry = cStruct('struct virtio_blk_geometry', BLK, {
  cylinders: 'uint16_t',
  heads: 'uint8_t',
  sectors: 'uint8_t',
});
export const virtioBlkConfig = cStruct(
  'struct virtio_blk_config',
  BLK,
  {
    capacity: 'uint64_t',
    size_max: 'uint32_t',
    seg_max: 'uint32_t',
    geometry: virtioBlkGeometry.type,
    blk_size: 'uint32_t',
    physical_block_exp: 'uint8_t',
    alignment_offset: 'uint8_t',
    min_io_size: 'uint16_t',
    opt_io_size: 'uint32_t',
    wce: 'uint8_t',
    unused: 'uint8_t',
    num_queues: 'uint16_t',
    max_discard_sectors: 'uint32_t',
    max_discard_seg: 'uint32_t',
    discard_sector_alignment: 'uint32_t',
    max_write_zeroes_sectors: 'uint32_t',
    max_write_zeroes_seg: 'uint32_t',
    write_zeroes_may_unmap: 'uint8_t',
    unused1: 'uint8_t[3]',
    max_secure_erase_sectors: 'uint32_t',
    max_secure_erase_seg: 'uint32_t',
    secure_erase_sector_alignment: 'uint32_t',
  },
  { packed: true },
);
export const virtioBlkOuthdr = cStruct('struct virtio_blk_outhdr', BLK, {
  type: 'uint32_t',
  ioprio: 'uint32_t',
  sector: 'uint64_t',
});
export const virtioBlkDiscardWriteZeroes = cStruct('struct virtio_blk_discard_write_zeroes', BLK, {
  sector: 'uint64_t',
  num_sectors: 'uint32_t',
  flags: 'uint32_t',
});

// Socket device (§5.10).
export const VIRTIO_VSOCK_EVENT_TRANSPORT_RESET = constant('VIRTIO_VSOCK_EVENT_TRANSPORT_RESET', VSOCK, 0);
export const VIRTIO_VSOCK_TYPE_STREAM = constant('VIRTIO_VSOCK_TYPE_STREAM', VSOCK, 1);
export const VIRTIO_VSOCK_OP_INVALID = constant('VIRTIO_VSOCK_OP_INVALID', VSOCK, 0);
export const VIRTIO_VSOCK_OP_REQUEST = constant('VIRTIO_VSOCK_OP_REQUEST', VSOCK, 1);
export const VIRTIO_VSOCK_OP_RESPONSE = constant('VIRTIO_VSOCK_OP_RESPONSE', VSOCK, 2);
export const VIRTIO_VSOCK_OP_RST = constant('VIRTIO_VSOCK_OP_RST', VSOCK, 3);
export const VIRTIO_VSOCK_OP_SHUTDOWN = constant('VIRTIO_VSOCK_OP_SHUTDOWN', VSOCK, 4);
export const VIRTIO_VSOCK_OP_RW = constant('VIRTIO_VSOCK_OP_RW', VSOCK, 5);
export const VIRTIO_VSOCK_OP_CREDIT_UPDATE = constant('VIRTIO_VSOCK_OP_CREDIT_UPDATE', VSOCK, 6);
export const VIRTIO_VSOCK_OP_CREDIT_REQUEST = constant('VIRTIO_VSOCK_OP_CREDIT_REQUEST', VSOCK, 7);
export const VIRTIO_VSOCK_SHUTDOWN_RCV = constant('VIRTIO_VSOCK_SHUTDOWN_RCV', VSOCK, 1);
export const VIRTIO_VSOCK_SHUTDOWN_SEND = constant('VIRTIO_VSOCK_SHUTDOWN_SEND', VSOCK, 2);

export const virtioVsockConfig = cStruct('struct virtio_vsock_config', VSOCK, { guest_cid: 'uint64_t' }, { packed: true });
export const virtioVsockEvent = cStruct('struct virtio_vsock_event', VSOCK, { id: 'uint32_t' }, { packed: true });
export const virtioVsockHdr = cStruct(
  'struct virtio_vsock_hdr',
  VSOCK,
  {
    src_cid: 'uint64_t',
    dst_cid: 'uint64_t',
    src_port: 'uint32_t',
    dst_port: 'uint32_t',
    len: 'uint32_t',
    type: 'uint16_t',
    op: 'uint16_t',
    flags: 'uint32_t',
    buf_alloc: 'uint32_t',
    fwd_cnt: 'uint32_t',
  },
  { packed: true },
);

/** A 64-bit feature set as a bigint bit mask. */
export const feature = (bit: number): bigint => 1n << BigInt(bit);
