package progress

import (
	"os"

	"golang.org/x/sys/unix"
)

// minBarWidth is the narrowest terminal the bars fit on.
const minBarWidth = 60

// IsTerminal reports whether f is a terminal.
func IsTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// CanDrawBars reports whether f is a terminal the bars can be drawn on. Serial
// consoles often report zero columns, and TERM=dumb cannot move the cursor;
// those get plain lines.
func CanDrawBars(f *os.File) bool {
	if !IsTerminal(f) || os.Getenv("TERM") == "dumb" {
		return false
	}
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	return err == nil && ws.Col >= minBarWidth
}
