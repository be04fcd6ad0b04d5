// The x86 boot protocol structures (asm/bootparam.h), declared through the ABI registry so the
// conformance test compiles the real header and checks every size and offset used here.
import { koffi } from '../sys/koffi.js';
import { cStruct, constant, offsetOf } from '../sys/abi.js';

const HEADER = 'asm/bootparam.h';

export const setupHeader = cStruct(
  'struct setup_header',
  HEADER,
  {
    setup_sects: 'uint8_t',
    root_flags: 'uint16_t',
    syssize: 'uint32_t',
    ram_size: 'uint16_t',
    vid_mode: 'uint16_t',
    root_dev: 'uint16_t',
    boot_flag: 'uint16_t',
    jump: 'uint16_t',
    header: 'uint32_t',
    version: 'uint16_t',
    realmode_swtch: 'uint32_t',
    start_sys_seg: 'uint16_t',
    kernel_version: 'uint16_t',
    type_of_loader: 'uint8_t',
    loadflags: 'uint8_t',
    setup_move_size: 'uint16_t',
    code32_start: 'uint32_t',
    ramdisk_image: 'uint32_t',
    ramdisk_size: 'uint32_t',
    bootsect_kludge: 'uint32_t',
    heap_end_ptr: 'uint16_t',
    ext_loader_ver: 'uint8_t',
    ext_loader_type: 'uint8_t',
    cmd_line_ptr: 'uint32_t',
    initrd_addr_max: 'uint32_t',
    kernel_alignment: 'uint32_t',
    relocatable_kernel: 'uint8_t',
    min_alignment: 'uint8_t',
    xloadflags: 'uint16_t',
    cmdline_size: 'uint32_t',
    hardware_subarch: 'uint32_t',
    hardware_subarch_data: 'uint64_t',
    payload_offset: 'uint32_t',
    payload_length: 'uint32_t',
    setup_data: 'uint64_t',
    pref_address: 'uint64_t',
    init_size: 'uint32_t',
    handover_offset: 'uint32_t',
    kernel_info_offset: 'uint32_t',
  },
  { packed: true },
);

export const bootE820Entry = cStruct(
  'struct boot_e820_entry',
  HEADER,
  {
    addr: 'uint64_t',
    size: 'uint64_t',
    type: 'uint32_t',
  },
  { packed: true },
);

export const E820_MAX_ENTRIES_ZEROPAGE = constant('E820_MAX_ENTRIES_ZEROPAGE', HEADER, 128);

// Members the VMM never fills are declared as byte arrays of their C size under their C names, so
// the ABI test still pins every offset that follows them.
export const bootParams = cStruct(
  'struct boot_params',
  HEADER,
  {
    screen_info: koffi.array('uint8_t', 0x40),
    apm_bios_info: koffi.array('uint8_t', 0x14),
    _pad2: koffi.array('uint8_t', 4),
    tboot_addr: 'uint64_t',
    ist_info: koffi.array('uint8_t', 0x10),
    acpi_rsdp_addr: 'uint64_t',
    _pad3: koffi.array('uint8_t', 8),
    hd0_info: koffi.array('uint8_t', 16),
    hd1_info: koffi.array('uint8_t', 16),
    sys_desc_table: koffi.array('uint8_t', 0x10),
    olpc_ofw_header: koffi.array('uint8_t', 0x10),
    ext_ramdisk_image: 'uint32_t',
    ext_ramdisk_size: 'uint32_t',
    ext_cmd_line_ptr: 'uint32_t',
    _pad4: koffi.array('uint8_t', 112),
    cc_blob_address: 'uint32_t',
    edid_info: koffi.array('uint8_t', 0x80),
    efi_info: koffi.array('uint8_t', 0x20),
    alt_mem_k: 'uint32_t',
    scratch: 'uint32_t',
    e820_entries: 'uint8_t',
    eddbuf_entries: 'uint8_t',
    edd_mbr_sig_buf_entries: 'uint8_t',
    kbd_status: 'uint8_t',
    secure_boot: 'uint8_t',
    _pad5: koffi.array('uint8_t', 2),
    sentinel: 'uint8_t',
    _pad6: koffi.array('uint8_t', 1),
    hdr: setupHeader.type,
    _pad7: koffi.array('uint8_t', 0x290 - 0x1f1 - setupHeader.size),
    edd_mbr_sig_buffer: koffi.array('uint32_t', 16),
    e820_table: koffi.array(bootE820Entry.type, E820_MAX_ENTRIES_ZEROPAGE),
    _pad8: koffi.array('uint8_t', 48),
    eddbuf: koffi.array('uint8_t', 6 * 0x52),
    _pad9: koffi.array('uint8_t', 276),
  },
  { packed: true },
);

/** Offset of the setup header inside both the bzImage file and the zero page. */
export const SETUP_HEADER_OFFSET = offsetOf(bootParams, 'hdr');

export const BootFlags = {
  bootFlagMagic: 0xaa55,
  /** "HdrS" */
  headerMagic: 0x5372_6448,
  LOADED_HIGH: constant('LOADED_HIGH', HEADER, 1 << 0),
  CAN_USE_HEAP: constant('CAN_USE_HEAP', HEADER, 1 << 7),
  XLF_KERNEL_64: constant('XLF_KERNEL_64', HEADER, 1 << 0),
  XLF_CAN_BE_LOADED_ABOVE_4G: constant('XLF_CAN_BE_LOADED_ABOVE_4G', HEADER, 1 << 1),
  /** type_of_loader 0xff: "undefined" boot loader, what every VMM without an assigned id uses. */
  loaderTypeUndefined: 0xff,
} as const;

export const E820Type = {
  RAM: 1,
  RESERVED: 2,
  ACPI: 3,
} as const;

/** Field offsets inside the zero page, resolved once from the declarations. */
export const ZeroPage = {
  size: bootParams.size,
  acpiRsdpAddr: offsetOf(bootParams, 'acpi_rsdp_addr'),
  extRamdiskImage: offsetOf(bootParams, 'ext_ramdisk_image'),
  extRamdiskSize: offsetOf(bootParams, 'ext_ramdisk_size'),
  extCmdLinePtr: offsetOf(bootParams, 'ext_cmd_line_ptr'),
  e820Entries: offsetOf(bootParams, 'e820_entries'),
  e820Table: offsetOf(bootParams, 'e820_table'),
  hdr: (field: string): number => SETUP_HEADER_OFFSET + offsetOf(setupHeader, field),
} as const;
