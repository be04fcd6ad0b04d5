# ts-vmm minimal firmware: one 4 KiB ROM page mapped at 0xfffff000, so the reset vector 0xfffffff0
# is its last 16 bytes. It takes the bootstrap processor from the reset state to the Linux 64-bit
# boot protocol entry: protected mode, identity-mapped long mode (with the AMD SEV C-bit set on RAM
# when the guest runs encrypted), then a jump to the kernel with rsi = the zero page. What to jump
# to is read from the hand-off block the VMM places at HANDOFF; the firmware trusts nothing else.
#
# The launch secret: on a measured launch the SEV firmware writes the owner's secret page at
# LAUNCH_SECRET with the guest's key, which only this guest can read (through the C-bit), while the
# host sees ciphertext there. A stock kernel has no way to find it without EFI, so when the hand-off
# block names a slot (a zero-filled file in the measured initrd) the firmware copies the page there
# through its encrypted mapping, then clears the page, before the kernel runs. The kernel unpacks the
# initrd into its own (private) memory, where the guest's init reads the secret as a file.
#
# Built by firmware/build.sh (GNU as + ld + objcopy); test/boot/firmware.test.ts rebuilds it and
# compares the bytes with the committed firmware/ts-vmm-firmware.bin, and checks the constants
# below against src/boot/layout.ts.

        .set ROM_BASE,          0xfffff000
        .set HANDOFF,           0x6000
        .set HANDOFF_MAGIC,     0x57465354      # "TSFW"
        .set LAUNCH_SECRET,     0x5000
        .set LAUNCH_SECRET_SIZE, 0x1000
        .set STACK_TOP,         0x8ff0
        .set PML4,              0x9000
        .set PDPT,              0xa000
        .set PAGE_DIRECTORIES,  0xb000
        .set MMIO_HOLE_START,   0xc0000000
        .set COM1,              0x3f8

        .set SEL_CODE32,        0x08
        .set SEL_CODE64,        0x10            # __BOOT_CS
        .set SEL_DATA,          0x18            # __BOOT_DS

        .set CR0_PE,            0x00000001
        .set CR0_PG,            0x80000000
        .set CR4_PAE,           0x00000020
        .set MSR_EFER,          0xc0000080
        .set EFER_LME,          0x00000100
        .set MSR_SEV_STATUS,    0xc0010131
        .set PTE_PRESENT_RW,    0x003
        .set PDE_2M,            0x083           # present, writable, 2 MiB page

        .text
        .globl  start16
        .code16
# Real mode, CS base 0xffff0000: 16-bit offsets of ROM symbols are (address - 0xffff0000).
start16:
        cli
        cld
        lgdtl   %cs:(gdt_descriptor - 0xffff0000)
        movl    %cr0, %eax
        orl     $CR0_PE, %eax
        movl    %eax, %cr0
        ljmpl   $SEL_CODE32, $start32

        .code32
start32:
        movw    $SEL_DATA, %ax
        movw    %ax, %ds
        movw    %ax, %es
        movw    %ax, %ss
        movw    %ax, %fs
        movw    %ax, %gs

# ebp = high half of every RAM mapping: the C-bit when SEV is active, else 0. CPUID 0x8000001f says
# whether SEV exists and where the C-bit is; MSR SEV_STATUS bit 0 says whether this guest is encrypted.
# The VMM hides the leaf from guests that are not, so the MSR is read only where it exists.
        xorl    %ebp, %ebp
        movl    $0x80000000, %eax
        cpuid
        cmpl    $0x8000001f, %eax
        jb      build_page_tables
        movl    $0x8000001f, %eax
        cpuid
        btl     $1, %eax
        jnc     build_page_tables
        movl    %ebx, %esi
        movl    $MSR_SEV_STATUS, %ecx
        rdmsr
        btl     $0, %eax
        jnc     build_page_tables
        andl    $0x3f, %esi
        subl    $32, %esi                       # the C-bit is always above bit 31
        btsl    %esi, %ebp

# Identity-map 4 GiB with 2 MiB pages; the MMIO hole stays unencrypted (C-bit clear).
build_page_tables:
        movl    $PML4, %edi
        movl    $(PAGE_DIRECTORIES + 4 * 4096 - PML4) / 4, %ecx
        xorl    %eax, %eax
        rep stosl
        movl    $(PDPT + PTE_PRESENT_RW), PML4
        movl    %ebp, PML4 + 4
        xorl    %ecx, %ecx
1:      movl    %ecx, %eax
        shll    $12, %eax
        addl    $(PAGE_DIRECTORIES + PTE_PRESENT_RW), %eax
        movl    %eax, PDPT(,%ecx,8)
        movl    %ebp, PDPT + 4(,%ecx,8)
        incl    %ecx
        cmpl    $4, %ecx
        jb      1b
        xorl    %ecx, %ecx
2:      movl    %ecx, %eax
        shll    $21, %eax
        orl     $PDE_2M, %eax
        movl    %eax, PAGE_DIRECTORIES(,%ecx,8)
        cmpl    $(MMIO_HOLE_START >> 21), %ecx
        jae     3f
        movl    %ebp, PAGE_DIRECTORIES + 4(,%ecx,8)
3:      incl    %ecx
        cmpl    $2048, %ecx
        jb      2b

        movl    $PML4, %eax
        movl    %eax, %cr3
        movl    %cr4, %eax
        orl     $CR4_PAE, %eax
        movl    %eax, %cr4
        movl    $MSR_EFER, %ecx
        rdmsr
        orl     $EFER_LME, %eax
        wrmsr
        movl    %cr0, %eax
        orl     $(CR0_PG | CR0_PE), %eax
        movl    %eax, %cr0
        ljmpl   $SEL_CODE64, $start64

        .code64
start64:
        lidt    idt_descriptor(%rip)
        cmpl    $HANDOFF_MAGIC, HANDOFF
        jne     no_handoff
        cmpl    $2, HANDOFF + 4                 # version 2 carries the secret slot
        jb      6f
        movq    HANDOFF + 24, %rdi              # slot: guest address of the initrd's secret file
        testq   %rdi, %rdi
        jz      6f
        movl    HANDOFF + 32, %ecx              # slot length, at most one page
        cmpl    $LAUNCH_SECRET_SIZE, %ecx
        jbe     7f
        movl    $LAUNCH_SECRET_SIZE, %ecx
7:      movl    $LAUNCH_SECRET, %esi
        rep movsb
        movl    $LAUNCH_SECRET, %edi
        movl    $LAUNCH_SECRET_SIZE, %ecx
        xorl    %eax, %eax
        rep stosb
6:      movq    HANDOFF + 8, %rax               # kernel 64-bit entry
        movq    HANDOFF + 16, %rsi              # zero page (struct boot_params)
        movq    $STACK_TOP, %rsp
        xorl    %ebx, %ebx
        xorl    %ecx, %ecx
        xorl    %edx, %edx
        xorl    %edi, %edi
        xorl    %ebp, %ebp
        jmpq    *%rax

# Say why on COM1, then fault: with no IDT that is a triple fault the VMM reports.
no_handoff:
        leaq    message(%rip), %rsi
        movw    $COM1, %dx
4:      lodsb
        testb   %al, %al
        jz      5f
        outb    %al, %dx
        jmp     4b
5:      ud2

message:
        .asciz  "ts-vmm firmware: no hand-off block at 0x6000\r\n"

        .balign 8
gdt:
        .quad   0                               # null
        .quad   0x00cf9b000000ffff              # 0x08: 32-bit code, flat
        .quad   0x00af9b000000ffff              # 0x10: 64-bit code, flat
        .quad   0x00cf93000000ffff              # 0x18: data, flat
gdt_end:

        .balign 4
gdt_descriptor:
        .word   gdt_end - gdt - 1
        .long   gdt

idt_descriptor:
        .word   0
        .quad   0

# The reset vector: the first instruction fetched, at 0xfffffff0.
        .org    0xff0
        .code16
reset_vector:
        jmp     start16
        .org    0x1000, 0xf4                    # pad with hlt
