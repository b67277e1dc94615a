// Package fetch gets the inputs armdev boots from: it resolves the latest NixOS
// aarch64 SD image build on Hydra to a pinned Lock (build id, URL, size,
// sha256), downloads that exact file resumably and verifies it, and finds a
// u-boot binary for QEMU's virt machine.
package fetch
