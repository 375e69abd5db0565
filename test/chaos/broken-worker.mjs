// A worker that never loads: its module throws while it is evaluated (test/chaos/chaos.mjs).
throw new Error("chaos: this worker fails to load");
