package main

// childGuarantee says, in exec's help, what becomes of the command when exec
// dies.
const childGuarantee = `If exec itself dies, even by SIGKILL, the command and every process it
started in its process group are killed (exec runs them under a guard that
the kernel tells of exec's death), so none runs on without the lock. A
process that leaves the group (setsid, a daemon) is not covered.`
