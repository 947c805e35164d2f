//go:build linux

package main

import (
	"os"
	"syscall"
	"unsafe"
)

// ttyColumns asks the terminal f for its width (TIOCGWINSZ). ok is false
// when f is not a terminal or does not know its width.
func ttyColumns(f *os.File) (cols int, ok bool) {
	var ws struct{ row, col, xpixel, ypixel uint16 }
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), uintptr(syscall.TIOCGWINSZ), uintptr(unsafe.Pointer(&ws)))
	if errno != 0 || ws.col == 0 {
		return 0, false
	}
	return int(ws.col), true
}

// isTTY reports whether f is a terminal: whether it has terminal
// attributes (TCGETS). /dev/null, a character device too, has none.
func isTTY(f *os.File) bool {
	var t syscall.Termios
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), uintptr(syscall.TCGETS), uintptr(unsafe.Pointer(&t)))
	return errno == 0
}
