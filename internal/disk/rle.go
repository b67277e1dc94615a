package disk

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// rleAsRaw rewrites a zstd stream so that every RLE block (one byte repeated,
// which is how zstd stores the long runs of zeros in a disk image) becomes
// a raw block holding the same bytes. The decoded content, and so the
// frame's checksum, is unchanged; what changes is the work: klauspost's
// decoder fills RLE blocks one byte at a time, but copies raw blocks with
// memmove, and the zeros it receives here are produced with clear().
//
// Only the frame and block headers are parsed (RFC 8878 §3.1); compressed
// blocks, skippable frames and checksums pass through untouched.
type rleAsRaw struct {
	r       *bufio.Reader
	pending []byte // header bytes to emit before anything else
	copyN   int64  // bytes to pass through from r
	fillN   int    // bytes of fill to emit
	fill    byte
	inFrame bool // between a frame header and its last block
	last    bool // the current block is the frame's last
	sum     bool // the current frame ends with a 4-byte checksum
	hdr     [18]byte
}

const (
	zstdMagic          = 0xFD2FB528
	skippableMagicMask = 0xFFFFFFF0
	skippableMagic     = 0x184D2A50
)

func newRLEAsRaw(r io.Reader) *rleAsRaw {
	return &rleAsRaw{r: bufio.NewReaderSize(r, readBufSize)}
}

func (z *rleAsRaw) Read(p []byte) (int, error) {
	for {
		switch {
		case len(p) == 0:
			return 0, nil
		case len(z.pending) > 0:
			n := copy(p, z.pending)
			z.pending = z.pending[n:]
			return n, nil
		case z.copyN > 0:
			n, err := z.r.Read(p[:min(int64(len(p)), z.copyN)])
			z.copyN -= int64(n)
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return n, err
		case z.fillN > 0:
			n := min(len(p), z.fillN)
			if z.fill == 0 {
				clear(p[:n])
			} else {
				for i := range p[:n] {
					p[i] = z.fill
				}
			}
			z.fillN -= n
			return n, nil
		case z.inFrame:
			if err := z.nextBlock(); err != nil {
				return 0, err
			}
		default:
			if err := z.nextFrame(); err != nil {
				return 0, err
			}
		}
	}
}

// nextFrame reads a frame header (or a skippable frame's) and queues it.
func (z *rleAsRaw) nextFrame() error {
	if _, err := z.r.Peek(1); err == io.EOF {
		return io.EOF
	}
	if _, err := io.ReadFull(z.r, z.hdr[:4]); err != nil {
		return frameErr(err)
	}
	magic := binary.LittleEndian.Uint32(z.hdr[:4])
	if magic&skippableMagicMask == skippableMagic {
		if _, err := io.ReadFull(z.r, z.hdr[4:8]); err != nil {
			return frameErr(err)
		}
		z.pending = z.hdr[:8]
		z.copyN = int64(binary.LittleEndian.Uint32(z.hdr[4:8]))
		return nil
	}
	if magic != zstdMagic {
		return fmt.Errorf("zstd: not a zstd frame (magic %#08x)", magic)
	}
	fhd, err := z.r.ReadByte()
	if err != nil {
		return frameErr(err)
	}
	z.hdr[4] = fhd
	single := fhd&0x20 != 0
	n := [4]int{0, 1, 2, 4}[fhd&3] // dictionary id
	if !single {
		n++ // window descriptor
	}
	switch fhd >> 6 { // frame content size
	case 0:
		if single {
			n++
		}
	case 1:
		n += 2
	case 2:
		n += 4
	case 3:
		n += 8
	}
	if _, err := io.ReadFull(z.r, z.hdr[5:5+n]); err != nil {
		return frameErr(err)
	}
	z.pending = z.hdr[:5+n]
	z.sum = fhd&0x04 != 0
	z.inFrame = true
	return nil
}

// nextBlock reads a block header; an RLE block is re-headed as raw and its
// byte queued as fill.
func (z *rleAsRaw) nextBlock() error {
	if z.last { // the frame's blocks are done: its checksum, then the next frame
		z.inFrame, z.last = false, false
		if z.sum {
			z.copyN = 4
		}
		return nil
	}
	if _, err := io.ReadFull(z.r, z.hdr[:3]); err != nil {
		return frameErr(err)
	}
	h := uint32(z.hdr[0]) | uint32(z.hdr[1])<<8 | uint32(z.hdr[2])<<16
	z.last = h&1 != 0
	size := h >> 3
	switch (h >> 1) & 3 {
	case 1: // RLE: one byte follows, repeated size times
		b, err := z.r.ReadByte()
		if err != nil {
			return frameErr(err)
		}
		raw := h &^ 0b110 // block type 0: raw
		z.hdr[0], z.hdr[1], z.hdr[2] = byte(raw), byte(raw>>8), byte(raw>>16)
		z.fill, z.fillN = b, int(size)
	case 3:
		return errors.New("zstd: reserved block type")
	default: // raw and compressed blocks: size bytes follow
		z.copyN = int64(size)
	}
	z.pending = z.hdr[:3]
	return nil
}

func frameErr(err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("zstd: truncated frame: %w", err)
}
