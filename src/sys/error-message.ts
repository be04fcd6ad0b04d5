/** The message of anything thrown: an Error's message, or the thrown value in words. */
export const errorMessage = (thrown: unknown): string => (thrown instanceof Error ? thrown.message : String(thrown));
