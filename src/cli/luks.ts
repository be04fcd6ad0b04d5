// `ts-vmm luks dump IMAGE [--header FILE]`: a LUKS1 or LUKS2 image's header, keyslots and segments, without any
// secret. A bad or unsupported image is one line on stderr and exit status 1.
import type { Command } from 'commander';
import { dumpLines } from '../luks/dump.js';
import { LuksImage } from '../luks/image.js';
import { errorMessage } from '../sys/error-message.js';

export function register(program: Command): void {
  const luks = program.command('luks').description('LUKS images: inspect LUKS1 and LUKS2 headers');
  luks
    .command('dump')
    .description('show a LUKS1 or LUKS2 header, its keyslots and segments (exit status 1 if the image is bad)')
    .argument('<image>', 'the LUKS image (or its data file, with --header)')
    .option('--header <file>', 'a detached header')
    .action(async (path: string, options: { header?: string }) => {
      try {
        const image = await LuksImage.open(path, { header: options.header });
        try {
          process.stdout.write(`${dumpLines(image).join('\n')}\n`);
        } finally {
          await image.close();
        }
      } catch (e) {
        process.stderr.write(`ts-vmm luks dump: ${errorMessage(e).split('\n')[0]}\n`);
        process.exitCode = 1;
      }
    });
}
