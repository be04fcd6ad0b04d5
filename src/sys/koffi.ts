// koffi, loaded with require: an ES-module import of this CommonJS package makes Node scan its source for named
// exports (cjs-module-lexer), once in every thread that loads it (each vCPU, each I/O thread), and under TCG that
// scan costs as much as the rest of loading koffi.
import { createRequire } from 'node:module';

export const koffi: typeof import('koffi') = createRequire(import.meta.url)('koffi');
