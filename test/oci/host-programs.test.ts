import { expect } from 'chai';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { ensureXtsLibrary } from '../../src/luks/xts.js';
import { sharedLibraries } from '../../src/oci/host-programs.js';

describe('host programs for the lab', () => {
  it("finds a program's dynamic loader and libraries as its loader resolves them, and none for a static one", async () => {
    const libs = await sharedLibraries(process.execPath);
    expect(
      libs.some((l) => /\/ld-linux-x86-64\.so\.2$/.test(l)),
      libs.join(' '),
    ).to.equal(true);
    expect(libs.some((l) => /\/libc\.so\.6$/.test(l))).to.equal(true);
    // busybox-static, which the lab needs anyway, is the static binary at hand.
    if (fs.existsSync('/bin/busybox')) expect(await sharedLibraries('/bin/busybox')).to.deep.equal([]);
  });

  it("lists a shared library's own libraries, which name no loader, through this process's loader", async () => {
    const xts = ensureXtsLibrary();
    expect(await sharedLibraries(xts)).to.deep.equal([]);
    const libs = await sharedLibraries(xts, true);
    expect(
      libs.some((l) => /\/libcrypto\.so\.3$/.test(l)),
      libs.join(' '),
    ).to.equal(true);
  });

  it('names a file that is not a program', async () => {
    const script = fileURLToPath(import.meta.url);
    let error: unknown;
    await sharedLibraries(script).catch((e: unknown) => {
      error = e;
    });
    expect(String(error)).to.contain(`${script} is not an ELF file`);
  });
});
