// How platform devices tell the VMM that the guest asked to stop: the guest's last word on its own
// lifetime, which the VMM turns into an exit status.
export type GuestStopRequest = 'poweroff' | 'reset';

export type StopRequestSink = (request: GuestStopRequest, detail: string) => void;
