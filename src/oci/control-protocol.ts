// What a container's monitor and the runtime's verbs say to each other: `ts-vmm start` asks the monitor over the
// control socket in the container's socket directory; the monitor tells `ts-vmm create` the outcome on its fd 3.
export const CONTROL_SOCKET = 'control.sock';
export const START_REQUEST = 'start\n';
export const START_REPLY = 'started\n';

/** The monitor's one line to `ts-vmm create` on success; a failure is `error: ...`. */
export const CREATED_LINE = 'created';
