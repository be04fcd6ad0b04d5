import { expect } from 'chai';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BundleError, parseBundleConfig, readBundleConfig, DEFAULT_MEMORY_MIB } from '../../src/oci/bundle-config.js';
import { checkEntrypoint } from '../../src/oci/entrypoint.js';

const minimal = () => ({
  ociVersion: '1.0.2',
  process: { args: ['/bin/hello', 'a b'], cwd: '/', env: ['PATH=/bin', 'X=1'], user: { uid: 0, gid: 0 } },
  root: { path: 'rootfs' },
});

const parse = (config: unknown) => parseBundleConfig(JSON.stringify(config), '/b');

describe('bundle config', () => {
  it('reads a minimal config with defaults', () => {
    const c = parse(minimal());
    expect(c.rootfs).to.equal('/b/rootfs');
    expect(c.readonlyRoot).to.equal(false);
    expect(c.process).to.deep.include({ args: ['/bin/hello', 'a b'], env: ['PATH=/bin', 'X=1'], cwd: '/', uid: 0, gid: 0, terminal: false });
    expect(c.vm).to.deep.equal({ cpus: 1, memoryMiB: DEFAULT_MEMORY_MIB });
    expect(c.warnings).to.deep.equal([]);
  });

  it('reads what runc spec generates: supported mounts kept, isolation fields warned about', () => {
    const c = parse({
      ...minimal(),
      hostname: 'box',
      root: { path: '/abs/rootfs', readonly: true },
      process: {
        ...minimal().process,
        terminal: true,
        noNewPrivileges: true,
        capabilities: { bounding: ['CAP_KILL'] },
        rlimits: [{ type: 'RLIMIT_NOFILE', hard: 1024, soft: 1024 }],
        user: { uid: 1000, gid: 100, additionalGids: [5], umask: 18 },
      },
      mounts: [
        { destination: '/proc', type: 'proc', source: 'proc' },
        { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
        { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'] },
        { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
        { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
        { destination: '/sys/fs/cgroup', type: 'cgroup', source: 'cgroup', options: ['nosuid', 'noexec', 'nodev', 'relatime', 'ro', 'rprivate'] },
      ],
      linux: { namespaces: [{ type: 'pid' }], maskedPaths: ['/proc/kcore'] },
      annotations: { 'ts-vmm.cpus': '2', 'krun.ram_mib': '512' },
    });
    expect(c.rootfs).to.equal('/abs/rootfs');
    expect(c.readonlyRoot).to.equal(true);
    expect(c.hostname).to.equal('box');
    expect(c.process).to.deep.include({ uid: 1000, gid: 100, additionalGids: [5], umask: 18, terminal: true, noNewPrivileges: true });
    expect(c.process.rlimits).to.deep.equal([{ type: 'RLIMIT_NOFILE', soft: 1024, hard: 1024 }]);
    expect(c.mounts.map((m) => `${m.type}:${m.destination}`)).to.deep.equal([
      'proc:/proc',
      'tmpfs:/dev',
      'devpts:/dev/pts',
      'mqueue:/dev/mqueue',
      'sysfs:/sys',
      'cgroup2:/sys/fs/cgroup',
    ]);
    expect(c.mounts[5]!.options).to.deep.equal(['nosuid', 'noexec', 'nodev', 'relatime', 'ro']);
    expect(c.vm).to.deep.equal({ cpus: 2, memoryMiB: 512 });
    expect(c.warnings.map((w) => w.split(':')[0])).to.deep.equal([
      'linux.namespaces ignored',
      'linux.maskedPaths ignored',
      'process.capabilities ignored',
      'mounts[5] (/sys/fs/cgroup)',
    ]);
  });

  const invalid: [string, unknown, RegExp][] = [
    ['not JSON', '{', /not valid JSON/],
    ['no process', { ociVersion: '1.0.0', root: { path: 'r' } }, /process: must be an object/],
    ['empty args', { ...minimal(), process: { ...minimal().process, args: [] } }, /process\.args: must name the program/],
    ['relative cwd', { ...minimal(), process: { ...minimal().process, cwd: 'tmp' } }, /process\.cwd: "tmp" must be an absolute path/],
    ['bad env', { ...minimal(), process: { ...minimal().process, env: ['NOEQUALS'] } }, /process\.env\[0\]: "NOEQUALS" is not NAME=value/],
    ['negative uid', { ...minimal(), process: { ...minimal().process, user: { uid: -1, gid: 0 } } }, /process\.user\.uid/],
    ['no root', { ...minimal(), root: undefined }, /root: must be an object/],
    ['ociVersion 2', { ...minimal(), ociVersion: '2.0.0' }, /ociVersion: "2\.0\.0" is not a runtime-spec 1\.x/],
    ['bind mount', { ...minimal(), mounts: [{ destination: '/data', source: '/srv', options: ['rbind'] }] }, /mounts\[0\] \(\/data\): bind mounts/],
    ['nfs mount', { ...minimal(), mounts: [{ destination: '/n', type: 'nfs', source: 'x:/y' }] }, /mount type "nfs" is not supported/],
    ['hooks', { ...minimal(), hooks: { prestart: [] } }, /hooks: hooks run host programs/],
    ['username', { ...minimal(), process: { ...minimal().process, user: { uid: 0, gid: 0, username: 'root' } } }, /process\.user\.username/],
    ['too little memory', { ...minimal(), annotations: { 'ts-vmm.memory-mib': '16' } }, /16 MiB is too little memory/],
    ['too much memory', { ...minimal(), annotations: { 'ts-vmm.memory-mib': '100000' } }, /100000 MiB is more memory than the \d+ MiB supported/],
    ['bad cpus', { ...minimal(), annotations: { 'ts-vmm.cpus': 'two' } }, /"two" is not a positive integer/],
    ['conflicting sizes', { ...minimal(), annotations: { 'ts-vmm.cpus': '2', 'krun.cpus': '4' } }, /ts-vmm\.cpus and krun\.cpus disagree/],
    ['bad rlimit', { ...minimal(), process: { ...minimal().process, rlimits: [{ type: 'RLIMIT_FOO', soft: 1, hard: 1 }] } }, /unknown limit "RLIMIT_FOO"/],
    ['bad hostname', { ...minimal(), hostname: 'a b' }, /hostname: "a b" is not a valid host name/],
  ];
  for (const [name, config, message] of invalid) {
    it(`refuses ${name}, naming config.json and the field`, () => {
      const text = typeof config === 'string' ? config : JSON.stringify(config);
      expect(() => parseBundleConfig(text, '/b'))
        .to.throw(BundleError, /^\/b\/config\.json: /)
        .and.match(message);
    });
  }

  it('refuses what execve(2), setgroups(2), mount(2) or the agent cannot take in the guest, naming the limit', () => {
    const refused = (config: unknown, pattern: RegExp) => expect(() => parse(config)).to.throw(BundleError, pattern);
    const withProcess = (changes: Record<string, unknown>) => ({ ...minimal(), process: { ...minimal().process, ...changes } });
    refused(
      withProcess({ args: ['/bin/sh', 'x'.repeat(300_000)] }),
      /^\/b\/config.json: process.args\[1\]: 300001 bytes \(with its NUL\) is more than execve\(2\) takes in one string \(MAX_ARG_STRLEN, 131072 bytes\)$/,
    );
    refused(withProcess({ env: [`A=${'x'.repeat(131_070)}`] }), /process.env\[0\]: 131073 bytes .* \(MAX_ARG_STRLEN/);
    const env = Array.from({ length: 30 }, (_, i) => `V${i}=${'x'.repeat(100_000)}`);
    refused(withProcess({ env }), /process.args and process.env: 30\d{5} bytes .* more than the 2097152 bytes execve\(2\) takes with RLIMIT_STACK 8388608/);
    expect(parse(withProcess({ env, rlimits: [{ type: 'RLIMIT_STACK', soft: 64 << 20, hard: 64 << 20 }] })).process.env).to.have.length(30);
    expect(parse(withProcess({ env: Array.from({ length: 10_000 }, (_, i) => `V${i}=${i}`) })).process.env).to.have.length(10_000);
    refused(withProcess({ user: { uid: 0, gid: 0, additionalGids: Array.from({ length: 65537 }, (_, i) => i) } }), /65537 groups .* \(NGROUPS_MAX, 65536\)/);
    refused(
      { ...minimal(), mounts: Array.from({ length: 65 }, (_, i) => ({ destination: `/m${i}`, type: 'tmpfs', source: 'tmpfs' })) },
      /^\/b\/config.json: mounts: 65 mounts are more than the guest agent makes \(64\)$/,
    );
    refused(
      { ...minimal(), mounts: [{ destination: `/${'d'.repeat(5000)}`, type: 'tmpfs', source: 'tmpfs' }] },
      /mounts\[0\].destination: 5002 bytes .* PATH_MAX/,
    );
    refused(
      { ...minimal(), mounts: [{ destination: '/t', type: 'tmpfs', source: 'tmpfs', options: [`size=${'9'.repeat(5000)}`] }] },
      /mounts\[0\].options: 5006 bytes of mount data are more than mount\(2\) takes \(one page, 4096 bytes\)/,
    );
  });

  it('warns about fields it does not know instead of dropping them silently', () => {
    const c = parse({ ...minimal(), process: { ...minimal().process, futureThing: 1 } });
    expect(c.warnings).to.deep.equal(['process.futureThing ignored: not a runtime-spec field ts-vmm knows']);
  });
});

describe('bundle on disk and entrypoint', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'ts-vmm-bundle-'));
    mkdirSync(join(dir, 'rootfs/bin'), { recursive: true });
    mkdirSync(join(dir, 'rootfs/usr/bin'), { recursive: true });
    writeFileSync(join(dir, 'rootfs/bin/busybox'), '#!/bin/sh\n', { mode: 0o755 });
    writeFileSync(join(dir, 'rootfs/bin/data'), 'x', { mode: 0o644 });
    symlinkSync('busybox', join(dir, 'rootfs/bin/hello'));
    symlinkSync('/bin/busybox', join(dir, 'rootfs/usr/bin/abs'));
    symlinkSync('../../../../../etc/passwd', join(dir, 'rootfs/bin/escape'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const write = (process: Record<string, unknown>) => {
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...minimal(), process: { ...minimal().process, ...process } }));
    return readBundleConfig(dir);
  };

  it('names a missing config.json', () => {
    expect(() => readBundleConfig(dir)).to.throw(BundleError, `${join(dir, 'config.json')}: no such file`);
  });

  it('names a missing rootfs', () => {
    rmSync(join(dir, 'rootfs'), { recursive: true });
    expect(() => write({})).to.throw(BundleError, /rootfs: root filesystem \(root\.path in .*config\.json\) is not a directory/);
  });

  it('finds entrypoints through PATH and symlinks resolved inside the rootfs', () => {
    expect(checkEntrypoint(write({ args: ['hello'], env: ['PATH=/usr/bin:/bin'] }))).to.equal('/bin/hello');
    expect(checkEntrypoint(write({ args: ['/usr/bin/abs'] }))).to.equal('/usr/bin/abs');
    expect(checkEntrypoint(write({ args: ['./busybox'], cwd: '/bin' }))).to.equal('/bin/./busybox');
  });

  it('refuses a missing, escaping or non-executable entrypoint, naming the file', () => {
    expect(() => checkEntrypoint(write({ args: ['nothere'] }))).to.throw(BundleError, /entrypoint "nothere" not found/);
    expect(() => checkEntrypoint(write({ args: ['/bin/escape'] }))).to.throw(BundleError, /entrypoint "\/bin\/escape" not found/);
    expect(() => checkEntrypoint(write({ args: ['/bin/data'] }))).to.throw(
      BundleError,
      /rootfs\/bin\/data: entrypoint "\/bin\/data" is not executable by uid 0/,
    );
    chmodSync(join(dir, 'rootfs/bin/busybox'), 0o744);
    expect(() => checkEntrypoint(write({ args: ['/bin/hello'], user: { uid: 1000, gid: 1000 } }))).to.throw(BundleError, /not executable by uid 1000/);
  });
});

describe('bundle config: what container engines bind in', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'ts-vmm-binds-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('copies host files bound in (as podman binds /etc/hosts, resolv.conf, hostname, .containerenv) and gives /dev/shm its own tmpfs', () => {
    for (const name of ['hosts', 'resolv.conf', 'hostname', '.containerenv']) writeFileSync(join(dir, name), `${name}\n`);
    const c = parse({
      ...minimal(),
      mounts: [
        { destination: '/etc/hosts', type: 'bind', source: join(dir, 'hosts'), options: ['bind', 'rprivate'] },
        { destination: '/etc/resolv.conf', type: 'bind', source: join(dir, 'resolv.conf'), options: ['bind', 'rprivate', 'ro'] },
        { destination: '/etc/hostname', type: 'bind', source: join(dir, 'hostname'), options: ['bind', 'rprivate'] },
        { destination: '/run/.containerenv', type: 'bind', source: join(dir, '.containerenv'), options: ['bind', 'rprivate'] },
        {
          destination: '/dev/shm',
          type: 'bind',
          source: '/var/lib/containers/storage/overlay-containers/x/userdata/shm',
          options: ['bind', 'rprivate', 'nosuid', 'noexec', 'nodev'],
        },
      ],
    });
    expect(c.mounts.map((m) => [m.destination, m.type, m.source, m.options])).to.deep.equal([
      ['/etc/hosts', 'bind', join(dir, 'hosts'), []],
      ['/etc/resolv.conf', 'bind', join(dir, 'resolv.conf'), ['ro']],
      ['/etc/hostname', 'bind', join(dir, 'hostname'), []],
      ['/run/.containerenv', 'bind', join(dir, '.containerenv'), []],
      ['/dev/shm', 'tmpfs', 'shm', ['nosuid', 'noexec', 'nodev', 'mode=1777']],
    ]);
  });

  const refused: [string, unknown, RegExp][] = [
    [
      'a host directory',
      { destination: '/data', type: 'bind', source: '/etc', options: ['rbind'] },
      /mounts\[0\] \(\/data\): bind mounts of host directories need a shared filesystem/,
    ],
    ['a relative source', { destination: '/etc/hosts', type: 'bind', source: 'hosts', options: ['bind'] }, /bind source "hosts" must be an absolute path/],
    [
      'a missing source',
      { destination: '/etc/hosts', type: 'bind', source: '/nonexistent/hosts', options: ['bind'] },
      /bind source \/nonexistent\/hosts: ENOENT/,
    ],
    ['a device', { destination: '/dev/x', type: 'bind', source: '/dev/null', options: ['bind'] }, /is neither a regular file nor a directory/],
  ];
  for (const [what, mount, message] of refused) {
    it(`refuses ${what} by name`, () => {
      expect(() => parse({ ...minimal(), mounts: [mount] })).to.throw(BundleError, message);
    });
  }

  it('refuses a host file larger than it copies', () => {
    writeFileSync(join(dir, 'big'), Buffer.alloc(1024 * 1024 + 1));
    expect(() => parse({ ...minimal(), mounts: [{ destination: '/big', type: 'bind', source: join(dir, 'big'), options: ['bind'] }] })).to.throw(
      BundleError,
      /is 1048577 bytes; host files are copied into the guest, at most 1048576/,
    );
  });
});
