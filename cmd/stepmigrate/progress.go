package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// isTerminal reports whether w is a terminal, where progress is one line
// redrawn in place. Anything else (a file, a pipe, /dev/null) gets plain
// lines.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && isTTY(f)
}

// defaultColumns is the width assumed when neither the terminal nor
// $COLUMNS says.
const defaultColumns = 80

// terminalWidth is w's width in columns: the terminal's own (asked each
// time, so that a resized window is followed), else $COLUMNS, else 80.
func terminalWidth(w io.Writer) int {
	if f, ok := w.(*os.File); ok {
		if cols, ok := ttyColumns(f); ok {
			return cols
		}
	}
	if n, err := strconv.Atoi(os.Getenv("COLUMNS")); err == nil && n > 0 {
		return n
	}
	return defaultColumns
}

// segment is one part of a status line. Lines too wide for the terminal
// drop their parts of lowest keep first.
type segment struct {
	text string
	keep int
}

// seg makes a segment; an empty text is left out of the line.
func seg(keep int, format string, args ...any) segment {
	return segment{text: fmt.Sprintf(format, args...), keep: keep}
}

// fitLine joins the segments' texts with spaces, in order. With width > 0
// the line is at most width columns: the segments of lowest keep are
// dropped until it fits, and what still does not fit is cut, ending in
// "…". Every character this command writes takes one column.
func fitLine(width int, segs ...segment) string {
	var parts []segment
	for _, s := range segs {
		if s.text != "" {
			parts = append(parts, s)
		}
	}
	join := func() string {
		texts := make([]string, len(parts))
		for i, s := range parts {
			texts[i] = s.text
		}
		return strings.Join(texts, " ")
	}
	line := join()
	for width > 0 && utf8.RuneCountInString(line) > width && len(parts) > 1 {
		low := 0
		for i, s := range parts {
			if s.keep < parts[low].keep {
				low = i
			}
		}
		parts = append(parts[:low], parts[low+1:]...)
		line = join()
	}
	if width > 0 && utf8.RuneCountInString(line) > width {
		r := []rune(line)
		line = string(r[:width-1]) + "…"
	}
	return line
}

// bar draws fraction (0 to 1) as [#####-----] of n cells inside.
func bar(fraction float64, n int) string {
	full := min(max(int(fraction*float64(n)), 0), n)
	return "[" + strings.Repeat("#", full) + strings.Repeat("-", n-full) + "]"
}

// progress shows how work goes. On a terminal it is one line redrawn in
// place (carriage return, erase line) at most ten times a second, cut to
// the terminal's width less one column, so that it never wraps: a line
// that wraps leaves a line behind at every redraw. Elsewhere it writes a
// plain line every few seconds, whole, so that logs stay readable.
type progress struct {
	w     io.Writer
	tty   bool
	width func() int // the terminal's width, asked at every draw
	now   func() time.Time
	last  time.Time
	drawn bool
}

// plainEvery is how often plain progress lines are written.
const plainEvery = 3 * time.Second

func newProgress(w io.Writer, tty bool) *progress {
	return &progress{w: w, tty: tty, width: func() int { return terminalWidth(w) }, now: time.Now}
}

// show draws the line, unless one was drawn too recently; force draws it
// anyway (a phase change).
func (p *progress) show(force bool, segs ...segment) {
	now := p.now()
	every := plainEvery
	if p.tty {
		every = 100 * time.Millisecond
	}
	if p.drawn && !force && now.Sub(p.last) < every {
		return
	}
	p.last, p.drawn = now, true
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", fitLine(p.width()-1, segs...))
	} else {
		fmt.Fprintln(p.w, fitLine(0, segs...))
	}
}

// finish erases the line on a terminal, so that what follows starts on a
// clean line.
func (p *progress) finish() {
	if p.tty && p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
	}
	p.drawn = false
}

// group writes n with thousands separators: 1234567 → "1,234,567".
func group[T ~int | ~int64 | ~uint64](n T) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	if neg {
		s = s[1:]
	}
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// durationText rounds d for people: 340ms, 7s, 1m12s, 2h5m.
func durationText(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return "<1ms"
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Hour:
		return trimZeroSeconds(d.Round(time.Second).String())
	}
	return trimZeroSeconds(d.Round(time.Minute).String())
}

// trimZeroSeconds turns "1m0s" into "1m", and "2h0m0s" into "2h".
func trimZeroSeconds(s string) string {
	if t, ok := strings.CutSuffix(s, "m0s"); ok {
		s = t + "m"
	}
	if t, ok := strings.CutSuffix(s, "h0m"); ok {
		s = t + "h"
	}
	return s
}

// plural says n things: "1 difference", "2 differences".
func plural[T ~int | ~int64 | ~uint64](n T, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return group(n) + " " + thing + "s"
}

func bytesText(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
