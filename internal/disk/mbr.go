package disk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

const (
	sectorSize = 512
	// TypeLinux is the MBR partition type of a Linux filesystem.
	TypeLinux = 0x83
	// TypeFAT32LBA is the MBR partition type of the SD image's FIRMWARE partition.
	TypeFAT32LBA = 0x0c
)

// Partition is one primary entry of an MBR partition table.
type Partition struct {
	// Index is the entry's number as Linux counts it: 1 to 4.
	Index int
	// Start is the partition's offset in bytes from the start of the image.
	Start int64
	// Size is the partition's length in bytes.
	Size int64
	// Type is the MBR partition type byte, e.g. TypeLinux.
	Type byte
}

// Partitions reads the MBR of the disk image at path and returns its
// non-empty primary partitions in table order. It fails when the image has no
// MBR or a partition ends beyond the end of the file.
func Partitions(path string) ([]Partition, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read partition table: %w", err)
	}
	defer func() { _ = f.Close() }()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read partition table: %w", err)
	}
	var mbr [sectorSize]byte
	if _, err := io.ReadFull(f, mbr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s is not a disk image: it is shorter than one sector", path)
		}
		return nil, fmt.Errorf("read partition table: %w", err)
	}
	if mbr[510] != 0x55 || mbr[511] != 0xAA {
		return nil, fmt.Errorf("%s has no MBR partition table (no 0x55AA signature): is it the raw SD image?", path)
	}
	var parts []Partition
	for i := range 4 {
		e := mbr[446+16*i : 446+16*(i+1)]
		typ := e[4]
		first := int64(binary.LittleEndian.Uint32(e[8:12]))
		count := int64(binary.LittleEndian.Uint32(e[12:16]))
		if typ == 0 || count == 0 {
			continue
		}
		p := Partition{Index: i + 1, Start: first * sectorSize, Size: count * sectorSize, Type: typ}
		if p.Start+p.Size > st.Size() {
			return nil, fmt.Errorf("%s: partition %d ends at byte %d beyond the end of the file (%d bytes): the image is truncated, download it again",
				path, p.Index, p.Start+p.Size, st.Size())
		}
		parts = append(parts, p)
	}
	return parts, nil
}

// RootPartition returns the Linux (type 0x83) partition of the disk image at
// path: the last one if there are several.
func RootPartition(path string) (Partition, error) {
	parts, err := Partitions(path)
	if err != nil {
		return Partition{}, err
	}
	for i := len(parts) - 1; i >= 0; i-- {
		if parts[i].Type == TypeLinux {
			return parts[i], nil
		}
	}
	return Partition{}, fmt.Errorf("%s has no Linux (type 0x83) partition: is it the NixOS SD image?", path)
}
