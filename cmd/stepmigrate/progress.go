package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// isTerminal reports whether w is a terminal (a character device), where
// progress is drawn on one line that rewrites itself.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// progress shows how long work is going: on a terminal one line redrawn
// at most ten times a second, with a bar when the share done is known;
// elsewhere a plain line every few seconds, so logs stay readable.
type progress struct {
	w     io.Writer
	tty   bool
	label string
	unit  string
	start time.Time
	last  time.Time
	drawn bool
	now   func() time.Time
}

func newProgress(w io.Writer, tty bool, label, unit string) *progress {
	return &progress{w: w, tty: tty, label: label, unit: unit, start: time.Now(), now: time.Now}
}

// update reports n units done; fraction is the share done (0 when
// unknown); detail is shown after the figures.
func (p *progress) update(n int64, fraction float64, detail string) {
	now := p.now()
	every := 3 * time.Second
	if p.tty {
		every = 100 * time.Millisecond
	}
	if p.drawn && now.Sub(p.last) < every {
		return
	}
	p.last, p.drawn = now, true
	elapsed := now.Sub(p.start)
	line := progressLine(p.label, p.unit, n, fraction, elapsed, detail, p.tty)
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", line)
	} else {
		fmt.Fprintln(p.w, line)
	}
}

// finish ends the progress line on a terminal, so that what follows
// starts on a line of its own.
func (p *progress) finish() {
	if p.tty && p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
	}
}

// progressLine renders one progress report, e.g.
//
//	backfill [#######-------------] 35% 12,345 records 3,456/s ETA 7s copied 9,000
func progressLine(label, unit string, n int64, fraction float64, elapsed time.Duration, detail string, bar bool) string {
	var b strings.Builder
	b.WriteString(label)
	if fraction > 0 && fraction <= 1 {
		if bar {
			const width = 20
			full := int(fraction * width)
			fmt.Fprintf(&b, " [%s%s]", strings.Repeat("#", full), strings.Repeat("-", width-full))
		}
		fmt.Fprintf(&b, " %d%%", int(fraction*100))
	}
	fmt.Fprintf(&b, " %s %s", group(n), unit)
	if s := elapsed.Seconds(); s > 0 {
		fmt.Fprintf(&b, " %s/s", group(int64(float64(n)/s)))
	}
	if fraction > 0 && fraction < 1 {
		eta := time.Duration(float64(elapsed) * (1 - fraction) / fraction)
		fmt.Fprintf(&b, " ETA %s", eta.Round(time.Second))
	}
	if detail != "" {
		b.WriteString(" ")
		b.WriteString(detail)
	}
	return b.String()
}

// group writes n with thousands separators: 1234567 → "1,234,567".
func group(n int64) string {
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
