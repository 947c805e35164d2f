//go:build !linux

package main

import "os"

// ttyColumns does not ask the terminal outside Linux; terminalWidth falls
// back to $COLUMNS, then 80.
func ttyColumns(*os.File) (int, bool) { return 0, false }

// isTTY reports whether f is a character device, the nearest test for a
// terminal without an ioctl.
func isTTY(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
