package disk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/rsonpath/armdev/internal/disk/sdlike"
)

// zpart is one piece of a zstd stream, as walkZstd finds it.
type zpart struct {
	kind string // frame, skippable, block-header, raw, rle-byte, compressed, checksum
	off  int    // offset in the stream
	n    int    // length in the stream
	// For frames: the descriptor's flags.
	checksum, single bool
	// For rle-byte: the byte and how many times it repeats.
	rle     byte
	rleSize int
}

// walkZstd splits a zstd stream into its headers and block contents,
// following RFC 8878 independently of rleAsRaw.
func walkZstd(data []byte) ([]zpart, error) {
	var parts []zpart
	off := 0
	need := func(n int) error {
		if off+n > len(data) {
			return fmt.Errorf("truncated at %d (need %d more bytes)", off, n)
		}
		return nil
	}
	for off < len(data) {
		if err := need(4); err != nil {
			return parts, err
		}
		magic := binary.LittleEndian.Uint32(data[off:])
		if magic&0xFFFFFFF0 == 0x184D2A50 {
			if err := need(8); err != nil {
				return parts, err
			}
			n := 8 + int(binary.LittleEndian.Uint32(data[off+4:]))
			if err := need(n); err != nil {
				return parts, err
			}
			parts = append(parts, zpart{kind: "skippable", off: off, n: n})
			off += n
			continue
		}
		if magic != 0xFD2FB528 {
			return parts, fmt.Errorf("bad magic %#x at %d", magic, off)
		}
		if err := need(5); err != nil {
			return parts, err
		}
		fhd := data[off+4]
		single := fhd&0x20 != 0
		fcs := []int{0, 2, 4, 8}[fhd>>6]
		if fhd>>6 == 0 && single {
			fcs = 1
		}
		n := 5 + []int{0, 1, 2, 4}[fhd&3] + fcs
		if !single {
			n++
		}
		if err := need(n); err != nil {
			return parts, err
		}
		frame := zpart{kind: "frame", off: off, n: n, checksum: fhd&4 != 0, single: single}
		parts = append(parts, frame)
		off += n
		for last := false; !last; {
			if err := need(3); err != nil {
				return parts, err
			}
			h := int(data[off]) | int(data[off+1])<<8 | int(data[off+2])<<16
			parts = append(parts, zpart{kind: "block-header", off: off, n: 3})
			off += 3
			last = h&1 != 0
			size := h >> 3
			switch (h >> 1) & 3 {
			case 0:
				if err := need(size); err != nil {
					return parts, err
				}
				parts = append(parts, zpart{kind: "raw", off: off, n: size})
				off += size
			case 1:
				if err := need(1); err != nil {
					return parts, err
				}
				parts = append(parts, zpart{kind: "rle-byte", off: off, n: 1, rle: data[off], rleSize: size})
				off++
			case 2:
				if err := need(size); err != nil {
					return parts, err
				}
				parts = append(parts, zpart{kind: "compressed", off: off, n: size})
				off += size
			default:
				return parts, fmt.Errorf("reserved block type at %d", off-3)
			}
		}
		if frame.checksum {
			if err := need(4); err != nil {
				return parts, err
			}
			parts = append(parts, zpart{kind: "checksum", off: off, n: 4})
			off += 4
		}
	}
	return parts, nil
}

// countParts counts the parts of each kind.
func countParts(parts []zpart) map[string]int {
	c := map[string]int{}
	for _, p := range parts {
		c[p.kind]++
	}
	return c
}

// firstPart returns the first part of kind matching ok, or fails the test.
func firstPart(t *testing.T, parts []zpart, kind string, ok func(zpart) bool) zpart {
	t.Helper()
	for _, p := range parts {
		if p.kind == kind && (ok == nil || ok(p)) {
			return p
		}
	}
	t.Fatalf("no %s part in the stream", kind)
	return zpart{}
}

// zstdFile compresses data with the zstd command and extra options, from a
// file so that the frame records the content size.
func zstdFile(t *testing.T, data []byte, opts ...string) []byte {
	t.Helper()
	zstdCLI := needTool(t, "zstd")
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in"), filepath.Join(dir, "in.zst")
	if err := os.WriteFile(in, data, 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, zstdCLI, append(append([]string{"-q", "-f"}, opts...), in, "-o", out)...)
	z, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return z
}

// decodeLimit is the most decodeZstd returns; more is errTooBig.
const decodeLimit = 64 << 20

var errTooBig = errors.New("decoded output over the test's limit")

// decodeZstd decodes data with klauspost's decoder as unzstd sets it up,
// through rleAsRaw when rewrite is set.
func decodeZstd(data []byte, rewrite bool) ([]byte, error) {
	var r io.Reader = bytes.NewReader(data)
	if rewrite {
		r = newRLEAsRaw(r)
	}
	dec, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(false),
		zstd.WithDecoderMaxMemory(decodeLimit), zstd.WithDecoderMaxWindow(decodeLimit))
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	var out bytes.Buffer
	n, err := io.Copy(&out, io.LimitReader(dec, decodeLimit+1))
	if err != nil {
		return nil, err
	}
	if n > decodeLimit {
		return nil, errTooBig
	}
	return out.Bytes(), nil
}

// mustDecode decodes z through rleAsRaw and checks the result is want.
func mustDecode(t *testing.T, z, want []byte) {
	t.Helper()
	got, err := decodeZstd(z, true)
	if err != nil {
		t.Fatalf("decode through rleAsRaw: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("decoded %d bytes, want %d (equal lengths: content differs)", len(got), len(want))
	}
}

// rewritten returns what rleAsRaw makes of z.
func rewritten(t *testing.T, z []byte) []byte {
	t.Helper()
	out, err := io.ReadAll(newRLEAsRaw(bytes.NewReader(z)))
	if err != nil {
		t.Fatalf("rleAsRaw: %v", err)
	}
	return out
}

// randomBytes returns n incompressible bytes, which zstd stores as raw
// blocks.
func randomBytes(n int, seed byte) []byte {
	b := make([]byte, n)
	_, _ = rand.NewChaCha8([32]byte{seed}).Read(b)
	return b
}

func sdLikeBytes(t *testing.T, size int64, seed uint64) []byte {
	t.Helper()
	p := filepath.Join(t.TempDir(), "sd.img")
	if err := sdlike.Write(p, size, seed); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestRLEAsRawSDImage(t *testing.T) {
	data := sdLikeBytes(t, 24<<20, 3)
	z := zstdFile(t, data)
	parts, err := walkZstd(z)
	if err != nil {
		t.Fatalf("walk the zstd command's output: %v", err)
	}
	in := countParts(parts)
	// The rewrite is only exercised if there are RLE blocks, and the
	// other block kinds must pass through next to them.
	if in["rle-byte"] == 0 || in["raw"] == 0 || in["compressed"] == 0 {
		t.Fatalf("want RLE, raw and compressed blocks in the input, got %v", in)
	}
	mustDecode(t, z, data)

	// The rewritten stream has the same blocks, none of them RLE, and
	// every RLE block became a raw block of its byte.
	rw := rewritten(t, z)
	outParts, err := walkZstd(rw)
	if err != nil {
		t.Fatalf("walk the rewritten stream: %v", err)
	}
	out := countParts(outParts)
	if out["rle-byte"] != 0 || out["raw"] != in["raw"]+in["rle-byte"] || out["compressed"] != in["compressed"] || out["block-header"] != in["block-header"] {
		t.Fatalf("rewritten blocks %v from %v", out, in)
	}
	if len(rw) <= len(z) {
		t.Fatalf("rewritten stream is %d bytes, not longer than the %d of the input", len(rw), len(z))
	}
	// Klauspost's decoder alone agrees.
	plain, err := decodeZstd(z, false)
	if err != nil || !bytes.Equal(plain, data) {
		t.Fatalf("klauspost alone: %d bytes, %v", len(plain), err)
	}
}

func TestRLEAsRawNonZeroRuns(t *testing.T) {
	ab := bytes.Repeat([]byte{0xAB}, 1<<20)
	mixed := append(append(append([]byte{}, ab...), make([]byte, 1<<20)...), bytes.Repeat([]byte{0x01}, 300<<10)...)
	mixed = append(mixed, sdLikeBytes(t, 2<<20, 5)...)
	for name, data := range map[string][]byte{"0xAB": ab, "mixed": mixed} {
		t.Run(name, func(t *testing.T) {
			z := zstdFile(t, data)
			parts, err := walkZstd(z)
			if err != nil {
				t.Fatal(err)
			}
			p := firstPart(t, parts, "rle-byte", func(p zpart) bool { return p.rle == 0xAB })
			if p.rleSize == 0 {
				t.Fatalf("empty RLE block: %+v", p)
			}
			mustDecode(t, z, data)
		})
	}
}

// skippable returns a skippable frame with the given magic nibble and payload.
func skippable(nibble byte, payload []byte) []byte {
	f := binary.LittleEndian.AppendUint32(nil, 0x184D2A50|uint32(nibble&0xF))
	f = binary.LittleEndian.AppendUint32(f, uint32(len(payload)))
	return append(f, payload...)
}

func TestRLEAsRawFrames(t *testing.T) {
	a := append(bytes.Repeat([]byte{0x00}, 512<<10), []byte("first frame")...)
	b := append(bytes.Repeat([]byte{0x7F}, 256<<10), sdLikeBytes(t, 3<<20, 9)...)
	za, zb := zstdFile(t, a), zstdFile(t, b)
	junk := bytes.Repeat([]byte{0xFF, 0x28, 0xB5, 0x2F, 0xFD}, 20) // looks like magic, must be skipped
	cases := map[string][]byte{
		"concatenated":            append(append([]byte{}, za...), zb...),
		"skippable between":       append(append(append([]byte{}, za...), skippable(0xA, junk)...), zb...),
		"skippable first, empty":  append(append(append(skippable(0, nil), za...), skippable(0xF, nil)...), zb...),
		"skippable last":          append(append(append([]byte{}, za...), zb...), skippable(3, junk)...),
		"same frame twice, + one": append(append(append([]byte{}, za...), za...), zb...),
	}
	wants := map[string][]byte{
		"same frame twice, + one": append(append(append([]byte{}, a...), a...), b...),
	}
	for name, z := range cases {
		t.Run(name, func(t *testing.T) {
			want, ok := wants[name]
			if !ok {
				want = append(append([]byte{}, a...), b...)
			}
			parts, err := walkZstd(z)
			if err != nil {
				t.Fatal(err)
			}
			if c := countParts(parts); c["frame"] < 2 || c["rle-byte"] == 0 {
				t.Fatalf("want several frames with RLE blocks, got %v", c)
			}
			mustDecode(t, z, want)
		})
	}
}

func TestRLEAsRawFrameKinds(t *testing.T) {
	// Zeros and a little text, small enough for a single-segment frame.
	// zstd never makes the first block of a frame RLE, so the zeros take
	// more than one block.
	small := append(make([]byte, 3*128<<10), "a little text after zeros"...)
	large := sdLikeBytes(t, 12<<20, 11)
	cases := []struct {
		name           string
		data           []byte
		opts           []string
		checksum, segm bool
	}{
		{"small checksummed", small, nil, true, true},
		{"small no checksum", small, []string{"--no-check"}, false, true},
		{"large checksummed", large, nil, true, false},
		{"large no checksum", large, []string{"--no-check"}, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			z := zstdFile(t, c.data, c.opts...)
			parts, err := walkZstd(z)
			if err != nil {
				t.Fatal(err)
			}
			f := firstPart(t, parts, "frame", nil)
			if f.checksum != c.checksum || f.single != c.segm {
				t.Fatalf("frame has checksum %v, single segment %v; the case wants %v, %v", f.checksum, f.single, c.checksum, c.segm)
			}
			if countParts(parts)["rle-byte"] == 0 {
				t.Fatal("no RLE block")
			}
			mustDecode(t, z, c.data)
		})
	}
}

func TestRLEAsRawTruncated(t *testing.T) {
	data := append(bytes.Repeat([]byte{0xAB}, 300<<10), randomBytes(1<<20, 13)...)
	data = append(data, sdLikeBytes(t, 4<<20, 13)...)
	za := zstdFile(t, data)
	zb := zstdFile(t, []byte("second frame"))
	z := append(append(append([]byte{}, za...), skippable(1, []byte("payload"))...), zb...)
	parts, err := walkZstd(z)
	if err != nil {
		t.Fatal(err)
	}
	first := func(kind string) zpart { return firstPart(t, parts, kind, nil) }
	sk := first("skippable")
	cuts := map[string]int{
		"inside the magic":             2,
		"inside the frame header":      first("frame").off + first("frame").n - 1,
		"after the frame header":       first("frame").off + first("frame").n,
		"inside a block header":        first("block-header").off + 2,
		"before an RLE byte":           first("rle-byte").off,
		"inside raw data":              first("raw").off + first("raw").n/2,
		"inside compressed data":       first("compressed").off + first("compressed").n/2,
		"inside the checksum":          first("checksum").off + 2,
		"before the checksum":          first("checksum").off,
		"inside a skippable header":    sk.off + 6,
		"inside a skippable payload":   sk.off + sk.n - 1,
		"inside the second frame":      len(z) - 5,
		"inside the last checksum":     len(z) - 1,
		"one byte into the next frame": len(za) + 1,
	}
	for name, cut := range cuts {
		t.Run(name, func(t *testing.T) {
			if cut <= 0 || cut >= len(z) {
				t.Fatalf("cut %d outside the %d-byte stream", cut, len(z))
			}
			got, err := decodeZstd(z[:cut], true)
			if err == nil {
				t.Fatalf("cut at %d of %d: decoded %d bytes without error", cut, len(z), len(got))
			}
			// rleAsRaw itself reports the truncation, whoever reads it.
			if _, err := io.ReadAll(newRLEAsRaw(bytes.NewReader(z[:cut]))); !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("rleAsRaw alone: got %v, want io.ErrUnexpectedEOF", err)
			}
		})
	}
	// The whole stream, and a cut at a frame boundary, are fine.
	mustDecode(t, z, append(append([]byte{}, data...), "second frame"...))
	mustDecode(t, z[:len(za)], data)
}

func TestDecompressZstdChecksumMismatch(t *testing.T) {
	data := append(bytes.Repeat([]byte{0}, 256<<10), randomBytes(1<<20, 17)...)
	z := zstdFile(t, data)
	parts, err := walkZstd(z)
	if err != nil {
		t.Fatal(err)
	}
	if !firstPart(t, parts, "frame", nil).checksum {
		t.Fatal("the zstd command wrote no checksum")
	}
	flips := map[string]int{
		"raw block byte": firstPart(t, parts, "raw", nil).off + 100,
		"RLE block byte": firstPart(t, parts, "rle-byte", func(p zpart) bool { return p.rle == 0 }).off,
	}
	for name, at := range flips {
		t.Run(name, func(t *testing.T) {
			bad := append([]byte{}, z...)
			bad[at] ^= 0x40
			dir := t.TempDir()
			src := filepath.Join(dir, "bad.img.zst")
			if err := os.WriteFile(src, bad, 0o644); err != nil {
				t.Fatal(err)
			}
			dst := filepath.Join(dir, "out.img")
			err := DecompressZstd(t.Context(), src, dst, nil)
			if !errors.Is(err, zstd.ErrCRCMismatch) {
				t.Fatalf("got %v, want zstd.ErrCRCMismatch", err)
			}
			if left := leftovers(t, dir, "bad.img.zst"); len(left) > 0 {
				t.Errorf("left behind: %v", left)
			}
		})
	}
}

func FuzzRLEAsRaw(f *testing.F) {
	// Seeds: real streams from klauspost's encoder, which writes RLE
	// blocks too, and from the zstd command when it is installed.
	inputs := [][]byte{
		bytes.Repeat([]byte{0}, 200<<10),
		append(bytes.Repeat([]byte{0xAB}, 130<<10), "tail text tail text tail text"...),
		[]byte("short"),
		nil,
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderCRC(true))
	if err != nil {
		f.Fatal(err)
	}
	for _, in := range inputs {
		f.Add(enc.EncodeAll(in, nil))
	}
	if zstdCLI, err := exec.LookPath("zstd"); err == nil {
		for _, in := range inputs[:2] {
			cmd := exec.Command(zstdCLI, "-q", "-c", "--no-check")
			cmd.Stdin = bytes.NewReader(in)
			if out, err := cmd.Output(); err == nil {
				f.Add(append(skippable(2, []byte("x")), out...))
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := decodeZstd(data, true)
		want, werr := decodeZstd(data, false)
		if errors.Is(err, errTooBig) || errors.Is(werr, errTooBig) {
			return
		}
		if werr == nil && err != nil {
			t.Fatalf("klauspost alone decodes %d bytes, through rleAsRaw: %v", len(want), err)
		}
		if err == nil && werr != nil {
			t.Fatalf("rleAsRaw accepts a stream klauspost rejects (%v)", werr)
		}
		if err == nil && !bytes.Equal(got, want) {
			t.Fatalf("through rleAsRaw: %d bytes, alone: %d, content differs", len(got), len(want))
		}
	})
}
