package progress

import (
	"bytes"
	"testing"
)

func TestTerminalRewritesInPlace(t *testing.T) {
	var b bytes.Buffer
	l := Line{W: &b, Terminal: true}
	l.Show("long status")
	if !l.Active() {
		t.Error("a shown terminal line is not active")
	}
	l.Show("short")
	l.End("done")
	if got, want := b.String(), "\rlong status\rshort      \rdone \n"; got != want {
		t.Errorf("terminal output %q, want %q", got, want)
	}
	b.Reset()
	l.Show("abc")
	l.Clear()
	if got, want := b.String(), "\rabc\r   \r"; got != want {
		t.Errorf("clear %q, want %q", got, want)
	}
}

func TestPlainLines(t *testing.T) {
	var b bytes.Buffer
	l := Line{W: &b}
	l.Show("one")
	if l.Active() {
		t.Error("plain lines are never active")
	}
	l.Show("two")
	l.Clear()
	l.End("end")
	if got, want := b.String(), "one\ntwo\nend\n"; got != want {
		t.Errorf("plain output %q, want %q", got, want)
	}
}

func TestBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1536: "1.5 KiB", 20 << 30: "20.0 GiB"} {
		if got := Bytes(n); got != want {
			t.Errorf("Bytes(%d) = %q, want %q", n, got, want)
		}
	}
}
