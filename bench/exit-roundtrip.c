// The C peer of bench/exit-roundtrip.ts: the smallest KVM VMM that runs the same real-mode guest
// (`out 0x80, al` in a loop of rcx iterations, then hlt) and times its KVM_RUN loop.
//   exit-roundtrip <exits>          prints "<exits> <nanoseconds>"
//   exit-roundtrip ioctl <calls>    times KVM_CHECK_EXTENSION calls, prints "<calls> <nanoseconds>"
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>

#define MUST(cond, what) do { if (!(cond)) { perror(what); exit(1); } } while (0)

static const uint8_t guest[] = { 0xe6, 0x80, 0x66, 0x49, 0x75, 0xfa, 0xf4 };

static int64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

int main(int argc, char **argv) {
  int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  MUST(kvm >= 0, "open /dev/kvm");
  if (argc == 3 && strcmp(argv[1], "ioctl") == 0) {
    long calls = atol(argv[2]);
    int64_t start = now_ns();
    for (long i = 0; i < calls; i++) MUST(ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY) >= 0, "KVM_CHECK_EXTENSION");
    printf("%ld %lld\n", calls, (long long)(now_ns() - start));
    return 0;
  }
  MUST(argc == 2, "usage: exit-roundtrip <exits> | ioctl <calls>");
  long exits = atol(argv[1]);
  int vm = ioctl(kvm, KVM_CREATE_VM, 0);
  MUST(vm >= 0, "KVM_CREATE_VM");
  size_t ram_size = 0x10000;
  uint8_t *ram = mmap(NULL, ram_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  MUST(ram != MAP_FAILED, "mmap RAM");
  memcpy(ram + 0x1000, guest, sizeof guest);
  struct kvm_userspace_memory_region region = { .slot = 0, .guest_phys_addr = 0, .memory_size = ram_size, .userspace_addr = (uint64_t)ram };
  MUST(ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) == 0, "KVM_SET_USER_MEMORY_REGION");
  MUST(ioctl(vm, KVM_SET_TSS_ADDR, 0xfffbd000) == 0, "KVM_SET_TSS_ADDR");
  int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
  MUST(vcpu >= 0, "KVM_CREATE_VCPU");
  int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  struct kvm_run *run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
  MUST(run != MAP_FAILED, "mmap kvm_run");
  struct kvm_sregs sregs;
  MUST(ioctl(vcpu, KVM_GET_SREGS, &sregs) == 0, "KVM_GET_SREGS");
  sregs.cs.base = 0;
  sregs.cs.selector = 0;
  MUST(ioctl(vcpu, KVM_SET_SREGS, &sregs) == 0, "KVM_SET_SREGS");
  struct kvm_regs regs = { .rip = 0x1000, .rflags = 0x2, .rcx = (uint64_t)exits };
  MUST(ioctl(vcpu, KVM_SET_REGS, &regs) == 0, "KVM_SET_REGS");

  long seen = 0;
  int64_t start = now_ns();
  for (;;) {
    MUST(ioctl(vcpu, KVM_RUN, 0) == 0, "KVM_RUN");
    if (run->exit_reason == KVM_EXIT_IO && run->io.port == 0x80) seen++;
    else if (run->exit_reason == KVM_EXIT_HLT) break;
    else { fprintf(stderr, "unexpected exit %u\n", run->exit_reason); return 1; }
  }
  int64_t elapsed = now_ns() - start;
  MUST(seen == exits, "exit count");
  printf("%ld %lld\n", seen, (long long)elapsed);
  return 0;
}
