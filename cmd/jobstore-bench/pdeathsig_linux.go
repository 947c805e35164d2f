package main

import (
	"os/exec"
	"syscall"
)

// setParentDeathSignal makes the kernel kill the private redis-server if
// the benchmark dies without stopping it.
func setParentDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
