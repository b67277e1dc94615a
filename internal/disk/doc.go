// Package disk prepares the guest's disk without root: it decompresses the
// zstd-compressed NixOS SD image into a sparse raw file, reads its MBR
// partition table, writes files into the ext4 root partition with e2fsprogs'
// debugfs, and manages qcow2 overlays and their snapshots with qemu-img.
//
// Decompression is pure Go (klauspost/compress), never the zstd command,
// and about as fast as `zstd -d` (which also writes sparse) thanks to three
// things:
//
//   - The SD image is mostly zeros, which zstd stores as RLE blocks (one
//     byte, repeated up to 128 KiB). klauspost's decoder fills those one
//     byte at a time, which made it about 2.7 times slower than `zstd -d`.
//     rleAsRaw rewrites the compressed stream on the fly so that each RLE
//     block arrives as a raw block of the same bytes, made with clear() and
//     copied with memmove. The decoded content, and so the frame checksum,
//     which the decoder still verifies, is unchanged.
//   - The decoder runs synchronously (concurrency 1): its pipelined mode
//     hands every 128 KiB block between three goroutines, which costs more
//     than it saves on a two-core machine.
//   - Writing is done by a second goroutine: the decoding goroutine only
//     skips all-zero 4 KiB blocks (they stay holes) and copies the rest
//     into batches; the writer does the pwrite calls and asks the kernel to
//     start writeback as it goes, so the fsync before the final rename has
//     little left to do.
package disk
